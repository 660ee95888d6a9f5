// The gateway fft-filter's features (modules/fft-filter/fft_filter/features.py), computed the same
// way from the same window: mean removed, periodic Hann window, one-sided amplitude (coherent-gain
// corrected) and power (normalised by the window's energy) spectra, band powers, Gaussian-refined
// peaks and time-domain summaries. The shared test vectors (firmware/test-vectors/) hold both sides
// to agreement.
#pragma once

#include "node/config.hpp"
#include "node/fft.hpp"

namespace node {

struct Peak {
    float hz;
    float amplitude;
};

struct ChannelFeatures {
    float mean;
    float rms;
    float std;
    float crest;
    float kurtosis;
    int peak_count;
    Peak peaks[kMaxPeaks];
    int band_count;
    float band_lo_hz[kMaxBands];
    float band_hi_hz[kMaxBands];
    float bands[kMaxBands];
};

struct BandSettings {
    int count = kDefaultBandCount;
    float edges_hz[kMaxBands] = {0, 20, 80, 200, 500, 1000, 2000, 0};
};

class FeatureExtractor {
public:
    /// `fft` must transform kWindowSize points.
    explicit FeatureExtractor(RealFft& fft);

    /// Features of one channel's kWindowSize samples; false when the samples are not finite.
    bool compute(const float* samples, float sample_rate_hz, ChannelFeatures* out);

    BandSettings bands;
    int peaks = kMaxPeaks;

private:
    RealFft& fft_;
    float window_[kWindowSize];
    float window_sum_;
    float window_energy_;
    float work_[kWindowSize];
    Complex spectrum_[kBins];
    float amplitude_[kBins];
    float power_[kBins];
};

/// Index of the band [lo, hi) that starts at `lo_hz`, or -1.
int band_index(const ChannelFeatures& f, float lo_hz);

}  // namespace node
