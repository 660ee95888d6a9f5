// The level-1 model's inputs and the inference seam. The four inputs and their normalisation are
// the anomaly-detector's (modules/anomaly-detector/.../models/motor-v1.json); the int8 quantisation
// parameters are the loaded model's own, read from its input and output tensors by the runtime.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "node/config.hpp"
#include "node/features.hpp"

namespace node {

struct Quant {
    float scale = 0;  ///< 0: not quantised
    int32_t zero_point = 0;
};

/// What a runtime reports about a model it loaded.
struct ModelIo {
    int inputs = 0;   ///< elements of the input tensor
    int outputs = 0;  ///< elements of the output tensor
    Quant input;
    Quant output;
    size_t arena_used = 0;  ///< bytes of the tensor arena the model needs
};

/// TFLM through espressif/esp-tflite-micro on the board, the tflite-micro PyPI runtime on the host.
class Inference {
public:
    /// Load a .tflite flatbuffer (kept in flash: the runtime may keep pointers into it).
    virtual bool load(const uint8_t* model, size_t size, ModelIo* io) = 0;
    /// One int8 inference of `io.inputs` values into `io.outputs` values.
    virtual bool invoke(const int8_t* input, int8_t* output) = 0;

protected:
    ~Inference() = default;
};

enum class Transform : uint8_t { kIdentity, kLog10 };

/// One model input: a channel's summary or band power, transformed and normalised.
struct InputFeature {
    Channel channel;
    float band_lo_hz;  ///< < 0: the channel's summary scalar (RMS, or the mean for temperature)
    Transform transform;
};

struct InputSpec {
    InputFeature features[kModelInputs] = {
        {kCurrent, -1, Transform::kIdentity},
        {kTemperature, -1, Transform::kIdentity},
        {kVibration, 80, Transform::kLog10},
        {kSound, 2000, Transform::kLog10},
    };
    float mean[kModelInputs] = {7.712624979582568f, 42.48912773366607f, -4.756060527955496f, -4.296870709633252f};
    float std[kModelInputs] = {1.7588306034451782f, 9.752937264545608f, 0.3716565135055383f, 0.038514633772351224f};
    float clip = 10.0f;
};

/// The summary scalar fft-filter puts at the top level of a features message for `channel`.
float channel_summary(Channel channel, const ChannelFeatures& f);

/// Normalised float inputs: clip((transform(value) - mean) / std, -clip, clip); false if a band is missing.
bool model_inputs(const InputSpec& spec, const ChannelFeatures* channels, float* out);

/// int8 quantisation with the model's parameters: clamp(round(x / scale + zero_point), -128, 127).
int8_t quantize(float x, const Quant& q);
float dequantize(int8_t v, const Quant& q);

}  // namespace node
