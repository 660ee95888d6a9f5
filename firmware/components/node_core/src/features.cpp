#include "node/features.hpp"

#include <math.h>

namespace node {

namespace {
constexpr double kPi = 3.14159265358979323846;
}

FeatureExtractor::FeatureExtractor(RealFft& fft) : fft_(fft) {
    double sum = 0, energy = 0;
    for (int k = 0; k < kWindowSize; ++k) {  // periodic (DFT-even) Hann, as fft-filter's make_window
        const double w = 0.5 - 0.5 * cos(2.0 * kPi * k / kWindowSize);
        window_[k] = static_cast<float>(w);
        sum += w;
        energy += w * w;
    }
    window_sum_ = static_cast<float>(sum);
    window_energy_ = static_cast<float>(energy);
}

bool FeatureExtractor::compute(const float* x, float fs, ChannelFeatures* out) {
    const int n = kWindowSize;
    double sum = 0;
    for (int i = 0; i < n; ++i) {
        if (!isfinite(x[i])) return false;
        sum += x[i];
    }
    const double mean = sum / n;
    double sq = 0, dev2 = 0, dev4 = 0, maxdev = 0;
    for (int i = 0; i < n; ++i) {
        const double d = x[i] - mean;
        sq += static_cast<double>(x[i]) * x[i];
        dev2 += d * d;
        dev4 += d * d * d * d;
        if (fabs(d) > maxdev) maxdev = fabs(d);
        work_[i] = static_cast<float>(d) * window_[i];
    }
    const double var = dev2 / n;
    const double sd = sqrt(var);
    out->mean = static_cast<float>(mean);
    out->rms = static_cast<float>(sqrt(sq / n));
    out->std = static_cast<float>(sd);
    out->crest = sd > 0 ? static_cast<float>(maxdev / sd) : 0.0f;
    out->kurtosis = sd > 0 ? static_cast<float>((dev4 / n) / (var * var)) : 0.0f;

    fft_.forward(work_, spectrum_);
    const double amp_scale = 2.0 / window_sum_;
    const double pow_scale = 2.0 / (static_cast<double>(n) * window_energy_);
    for (int k = 0; k < kBins; ++k) {
        const double re = spectrum_[k].re, im = spectrum_[k].im;
        const double mag2 = re * re + im * im;
        double a = sqrt(mag2) * amp_scale, p = mag2 * pow_scale;
        if (k == 0 || k == kBins - 1) {  // DC and (n even) Nyquist are not doubled
            a /= 2;
            p /= 2;
        }
        amplitude_[k] = static_cast<float>(a);
        power_[k] = static_cast<float>(p);
    }

    const double bin_hz = static_cast<double>(fs) / n;
    const double nyquist = bin_hz * (kBins - 1);
    out->band_count = 0;
    for (int b = 0; b < bands.count && b < kMaxBands; ++b) {
        const double lo = bands.edges_hz[b];
        if (lo >= nyquist) break;
        const bool last = b + 1 >= bands.count || bands.edges_hz[b + 1] >= nyquist;
        const double hi = last ? nyquist : bands.edges_hz[b + 1];
        double e = 0;
        for (int k = 0; k < kBins; ++k) {
            const double f = k * bin_hz;
            if (f >= lo && (last ? f <= hi : f < hi)) e += power_[k];
        }
        const int i = out->band_count++;
        out->band_lo_hz[i] = static_cast<float>(lo);
        out->band_hi_hz[i] = static_cast<float>(hi);
        out->bands[i] = static_cast<float>(e);
        if (last) break;
    }

    // Peaks: local maxima (DC excluded), the largest `peaks`, refined by Gaussian interpolation.
    out->peak_count = 0;
    int top[kMaxPeaks];
    const int want = peaks < kMaxPeaks ? peaks : kMaxPeaks;
    float amax = 0;
    for (int k = 0; k < kBins; ++k) amax = amplitude_[k] > amax ? amplitude_[k] : amax;
    for (int k = 1; k + 1 < kBins && want > 0; ++k) {
        const float a = amplitude_[k];
        if (!(a > amplitude_[k - 1] && a >= amplitude_[k + 1] && a > 0)) continue;
        int pos = out->peak_count;  // insertion into the descending top list
        while (pos > 0 && amplitude_[top[pos - 1]] < a) --pos;
        if (pos >= want) continue;
        const int last = out->peak_count < want ? out->peak_count : want - 1;
        for (int j = last; j > pos; --j) top[j] = top[j - 1];
        top[pos] = k;
        if (out->peak_count < want) ++out->peak_count;
    }
    const double floor_ = static_cast<double>(amax) * 1e-12 + 1e-300;
    for (int i = 0; i < out->peak_count; ++i) {
        const int k = top[i];
        const double al = log(fmax(amplitude_[k - 1], floor_));
        const double be = log(fmax(amplitude_[k], floor_));
        const double ga = log(fmax(amplitude_[k + 1], floor_));
        const double denom = al - 2 * be + ga;
        double p = denom < 0 ? 0.5 * (al - ga) / denom : 0.0;
        p = p < -0.5 ? -0.5 : (p > 0.5 ? 0.5 : p);
        out->peaks[i].hz = static_cast<float>((k + p) * bin_hz);
        out->peaks[i].amplitude = static_cast<float>(exp(be - 0.25 * (al - ga) * p));
    }
    return true;
}

int band_index(const ChannelFeatures& f, float lo_hz) {
    for (int i = 0; i < f.band_count; ++i)
        if (f.band_lo_hz[i] == lo_hz) return i;
    return -1;
}

}  // namespace node
