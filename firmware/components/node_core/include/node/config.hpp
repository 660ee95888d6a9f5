// Compile-time sizes of the node: everything is static, nothing is allocated after init.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace node {

/// The four sensor channels, in the order of a sample frame and of the gateway's fft-filter.
enum Channel : uint8_t { kCurrent = 0, kTemperature = 1, kVibration = 2, kSound = 3 };
constexpr int kChannels = 4;
constexpr const char* kChannelNames[kChannels] = {"current", "temperature", "vibration", "sound"};

/// One analysis window per channel: the gateway's defaults (fft-filter windowSize, motor-sensor rate).
constexpr int kWindowSize = 1024;
constexpr int kBins = kWindowSize / 2 + 1;
constexpr float kDefaultSampleRateHz = 8000.0f;

/// fft-filter's default band edges (Hz); the last band ends at Nyquist.
constexpr int kMaxBands = 8;
constexpr int kDefaultBandCount = 7;
constexpr float kDefaultBandEdgesHz[kDefaultBandCount] = {0, 20, 80, 200, 500, 1000, 2000};
constexpr int kMaxPeaks = 5;

/// The level-1 model: four normalised inputs, one score.
constexpr int kModelInputs = 4;

/// Bounds of what the node accepts from the network.
constexpr size_t kMaxDeviceId = 64;
constexpr size_t kMaxUrl = 256;
constexpr size_t kMaxVersion = 32;
constexpr size_t kMaxCredential = 128;
constexpr size_t kMaxModelBytes = 64 * 1024;  ///< one model slot (the flash partition's size)
constexpr int kMaxJsonTokens = 96;            ///< tokens in one desired-property or command document

}  // namespace node
