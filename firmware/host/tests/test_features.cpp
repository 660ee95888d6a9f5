// The C++ features against the gateway fft-filter's, on the shared test vectors
// (firmware/test-vectors/features.json, generated from modules/fft-filter).
#include <gtest/gtest.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <map>
#include <string>
#include <vector>

#undef JSMN_HEADER
#define JSMN_STATIC
#define JSMN_PARENT_LINKS
#define JSMN_STRICT
#include <jsmn.h>

#include "kiss_real_fft.hpp"
#include "node/features.hpp"

namespace {

struct Json {
    std::string text;
    std::vector<jsmntok_t> tok;
    std::string str(int t) const { return text.substr(tok[t].start, tok[t].end - tok[t].start); }
    double num(int t) const { return strtod(str(t).c_str(), nullptr); }
    int find(int obj, const std::string& key) const {
        for (int t = obj + 1; t < static_cast<int>(tok.size()) && tok[t].start < tok[obj].end; ++t)
            if (tok[t].parent == obj && str(t) == key) return t + 1;
        return -1;
    }
    std::vector<int> children(int parent) const {
        std::vector<int> out;
        for (int t = parent + 1; t < static_cast<int>(tok.size()) && tok[t].start < tok[parent].end; ++t)
            if (tok[t].parent == parent) out.push_back(t);
        return out;
    }
};

Json load_vectors() {
    Json j;
    FILE* f = fopen(TEST_VECTORS, "rb");
    if (!f) return j;
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) j.text.append(buf, n);
    fclose(f);
    jsmn_parser p;
    jsmn_init(&p);
    const int count = jsmn_parse(&p, j.text.data(), j.text.size(), nullptr, 0);
    j.tok.resize(count > 0 ? count : 0);
    jsmn_init(&p);
    jsmn_parse(&p, j.text.data(), j.text.size(), j.tok.data(), j.tok.size());
    return j;
}

class Vectors : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        json = new Json(load_vectors());
        fft = new node::KissRealFft();
        ASSERT_TRUE(fft->init(node::kWindowSize));
    }
    static Json* json;
    static node::KissRealFft* fft;
};
Json* Vectors::json = nullptr;
node::KissRealFft* Vectors::fft = nullptr;

void expect_close(double got, double want, double rel, double abs_, const std::string& what) {
    EXPECT_LE(fabs(got - want), abs_ + rel * fabs(want)) << what << ": C++ " << got << " vs fft-filter " << want;
}

}  // namespace

TEST_F(Vectors, FeaturesMatchTheGatewayWithinTheStatedTolerance) {
    ASSERT_FALSE(json->tok.empty()) << "cannot read " << TEST_VECTORS;
    const int tol = json->find(0, "tolerance");
    const double rel = json->num(json->find(tol, "relative")), abs_ = json->num(json->find(tol, "absolute"));
    const double peak_hz = json->num(json->find(tol, "peakHz"));
    const double peak_floor = json->num(json->find(tol, "peakFloor"));
    ASSERT_EQ(static_cast<int>(json->num(json->find(0, "windowSize"))), node::kWindowSize);
    node::FeatureExtractor fx(*fft);
    const std::vector<int> cases = json->children(json->find(0, "cases"));
    ASSERT_GE(cases.size(), 4u);
    int compared = 0;
    for (int c : cases) {
        const std::string name = json->str(json->find(c, "name"));
        const float fs = static_cast<float>(json->num(json->find(c, "sampleRateHz")));
        for (const char* channel : node::kChannelNames) {
            const std::string where = name + "/" + channel;
            std::vector<float> x;
            for (int t : json->children(json->find(json->find(c, "samples"), channel)))
                x.push_back(strtof(json->str(t).c_str(), nullptr));
            ASSERT_EQ(x.size(), static_cast<size_t>(node::kWindowSize)) << where;
            node::ChannelFeatures f;
            ASSERT_TRUE(fx.compute(x.data(), fs, &f)) << where;
            const int want = json->find(json->find(c, "features"), channel);
            const std::map<std::string, float> scalars = {
                {"mean", f.mean}, {"rms", f.rms}, {"std", f.std}, {"crest", f.crest}, {"kurtosis", f.kurtosis}};
            for (const auto& [key, value] : scalars) {
                // The mean of a zero-mean signal is noise around 0: judge it against the RMS.
                const double floor_ = key == "mean" ? rel * f.rms : abs_;
                expect_close(value, json->num(json->find(want, key)), rel, floor_, where + "." + key);
                ++compared;
            }
            const int bands = json->find(want, "bands");
            const std::vector<int> keys = json->children(bands);
            ASSERT_EQ(static_cast<int>(keys.size()), f.band_count) << where;
            for (size_t b = 0; b < keys.size(); ++b) {
                char label[32];
                snprintf(label, sizeof(label), "%g-%g", f.band_lo_hz[b], f.band_hi_hz[b]);
                EXPECT_EQ(json->str(keys[b]), label) << where;
                // Band powers: relative to the channel's total power (Parseval), as a band can be ~0.
                expect_close(f.bands[b], json->num(keys[b] + 1), rel, rel * f.std * f.std, where + ".bands." + label);
                ++compared;
            }
            const std::vector<int> peaks = json->children(json->find(want, "peaks"));
            ASSERT_EQ(static_cast<int>(peaks.size()), f.peak_count) << where;
            const double top = f.peak_count ? f.peaks[0].amplitude : 0;
            for (size_t p = 0; p < peaks.size(); ++p) {
                const std::vector<int> pair = json->children(peaks[p]);
                // A peak far below the strongest sits in float32's rounding noise: its position is
                // held to half a bin and its amplitude to that floor.
                const bool weak = json->num(pair[1]) < peak_floor * top;
                const double hz_tol = weak ? 0.5 * fs / node::kWindowSize : peak_hz;
                expect_close(f.peaks[p].hz, json->num(pair[0]), 0, hz_tol, where + ".peaks.hz");
                expect_close(f.peaks[p].amplitude, json->num(pair[1]), rel, weak ? peak_floor * top : abs_,
                             where + ".peaks.amplitude");
                compared += 2;
            }
        }
    }
    EXPECT_GT(compared, 300);
}

TEST_F(Vectors, ASineReadsItsAmplitudeAndFrequency) {
    node::FeatureExtractor fx(*fft);
    std::vector<float> x(node::kWindowSize);
    const double f0 = 1000.0;  // on bin 128
    for (int i = 0; i < node::kWindowSize; ++i) x[i] = static_cast<float>(2.0 * sin(2 * M_PI * f0 * i / 8000.0));
    node::ChannelFeatures f;
    ASSERT_TRUE(fx.compute(x.data(), 8000.0f, &f));
    ASSERT_GE(f.peak_count, 1);
    EXPECT_NEAR(f.peaks[0].hz, f0, 0.5);
    EXPECT_NEAR(f.peaks[0].amplitude, 2.0, 0.02);
    double total = 0;
    for (int b = 0; b < f.band_count; ++b) total += f.bands[b];
    EXPECT_NEAR(total, 2.0, 0.01);  // Parseval: the bands sum to the variance, a^2 / 2
    EXPECT_NEAR(f.rms, sqrt(2.0), 1e-3);
}

TEST_F(Vectors, NonFiniteSamplesAreRefused) {
    node::FeatureExtractor fx(*fft);
    std::vector<float> x(node::kWindowSize, 1.0f);
    x[17] = NAN;
    node::ChannelFeatures f;
    EXPECT_FALSE(fx.compute(x.data(), 8000.0f, &f));
}
