#include "node/model.hpp"

#include <math.h>

namespace node {

float channel_summary(Channel channel, const ChannelFeatures& f) {
    return channel == kTemperature ? f.mean : f.rms;
}

bool model_inputs(const InputSpec& spec, const ChannelFeatures* channels, float* out) {
    for (int i = 0; i < kModelInputs; ++i) {
        const InputFeature& in = spec.features[i];
        const ChannelFeatures& f = channels[in.channel];
        double v;
        if (in.band_lo_hz < 0) {
            v = channel_summary(in.channel, f);
        } else {
            const int b = band_index(f, in.band_lo_hz);
            if (b < 0) return false;
            v = f.bands[b];
        }
        if (in.transform == Transform::kLog10) v = log10(v > 1e-12 ? v : 1e-12);  // inputs.py LOG_FLOOR
        double z = (v - spec.mean[i]) / spec.std[i];
        z = z < -spec.clip ? -spec.clip : (z > spec.clip ? spec.clip : z);
        out[i] = static_cast<float>(z);
    }
    return true;
}

int8_t quantize(float x, const Quant& q) {
    // In float32, as the anomaly-detector's numpy code computes it; rintf rounds half to even like
    // numpy's round (default rounding mode).
    const float v = rintf(x / q.scale + static_cast<float>(q.zero_point));
    return static_cast<int8_t>(v < -128 ? -128 : (v > 127 ? 127 : v));
}

float dequantize(int8_t v, const Quant& q) {
    return static_cast<float>((static_cast<int32_t>(v) - q.zero_point) * static_cast<double>(q.scale));
}

}  // namespace node
