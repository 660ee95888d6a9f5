#include <gtest/gtest.h>

#include <math.h>

#include "node/model.hpp"

namespace {
// motor-v1.tflite's input and output quantisation (modules/anomaly-detector/.../motor-v1.json).
const node::Quant kIn{0.0784313753247261f, -1};
const node::Quant kOut{0.00390625f, -128};
}  // namespace

TEST(Quantize, WithTheModelsOwnParameters) {
    EXPECT_EQ(node::quantize(0.0f, kIn), -1);
    EXPECT_EQ(node::quantize(1.0f, kIn), 12);    // 12.75 - 1 = 11.75 -> 12
    EXPECT_EQ(node::quantize(-1.0f, kIn), -14);  // -12.75 - 1 = -13.75 -> -14
    EXPECT_EQ(node::quantize(10.0f, kIn), 126);  // 127.499995 - 1, in float32 as numpy computes it
    EXPECT_EQ(node::quantize(100.0f, kIn), 127);
    EXPECT_EQ(node::quantize(-100.0f, kIn), -128);
}

TEST(Quantize, RoundsHalfToEvenLikeNumpy) {
    const node::Quant q{1.0f, 0};
    EXPECT_EQ(node::quantize(0.5f, q), 0);
    EXPECT_EQ(node::quantize(1.5f, q), 2);
    EXPECT_EQ(node::quantize(-2.5f, q), -2);
}

TEST(Quantize, OutputDequantisesToAScore) {
    EXPECT_FLOAT_EQ(node::dequantize(-128, kOut), 0.0f);
    EXPECT_FLOAT_EQ(node::dequantize(127, kOut), 255.0f / 256.0f);
    EXPECT_FLOAT_EQ(node::dequantize(76, kOut), 204.0f / 256.0f);
}

TEST(ModelInputs, TransformNormaliseAndClip) {
    node::InputSpec spec;
    node::ChannelFeatures ch[node::kChannels] = {};
    for (auto& c : ch) {
        c.band_count = 7;
        const float lo[7] = {0, 20, 80, 200, 500, 1000, 2000};
        for (int b = 0; b < 7; ++b) c.band_lo_hz[b] = lo[b];
    }
    ch[node::kCurrent].rms = 7.712624979582568f + 1.7588306034451782f;  // one std above the mean
    ch[node::kTemperature].mean = 42.48912773366607f;
    ch[node::kVibration].bands[2] = powf(10.0f, -4.756060527955496f);  // 80-200 at the mean
    ch[node::kSound].bands[6] = 0.0f;  // log10 floor 1e-12 -> far below: clipped to -10
    float in[4];
    ASSERT_TRUE(node::model_inputs(spec, ch, in));
    EXPECT_NEAR(in[0], 1.0f, 1e-5);
    EXPECT_NEAR(in[1], 0.0f, 1e-5);
    EXPECT_NEAR(in[2], 0.0f, 1e-4);
    EXPECT_FLOAT_EQ(in[3], -10.0f);
}

TEST(ModelInputs, AMissingBandIsAnError) {
    node::InputSpec spec;
    node::ChannelFeatures ch[node::kChannels] = {};
    float in[4];
    EXPECT_FALSE(node::model_inputs(spec, ch, in));
}
