#include <gtest/gtest.h>

#include <malloc.h>
#include <math.h>
#include <string.h>

#include <string>
#include <vector>

#undef JSMN_HEADER
#define JSMN_STATIC
#define JSMN_PARENT_LINKS
#define JSMN_STRICT
#include <jsmn.h>

#include "helpers.hpp"
#include "node/node.hpp"

using testing_node::MemoryStore;
using testing_node::ScriptedRuntime;
using testing_node::sha256_hex;

namespace {

struct Rig {
    node::KissRealFft fft;
    MemoryStore store;
    ScriptedRuntime runtime;
    node::Node n{fft, runtime, store};
    std::vector<float> data[node::kChannels];
    const float* channels[node::kChannels];
    node::WindowResult r;
    explicit Rig(bool activated = true) {
        EXPECT_TRUE(fft.init());
        const std::string v1 = "MODEL v1";
        node::NodeConfig cfg;
        strcpy(cfg.device_id, "node-7");
        cfg.boot = 3;
        n.init(cfg, 0);
        EXPECT_TRUE(n.install_factory(reinterpret_cast<const uint8_t*>(v1.data()), v1.size(), "1"));
        n.activation().start("node-7", "key", activated ? "credential" : "", 0);
        const double amp[node::kChannels] = {10, 0.05, 0.2, 0.02}, f0[node::kChannels] = {50, 1, 120, 3000};
        const double dc[node::kChannels] = {0, 42, 0, 0};
        for (int c = 0; c < node::kChannels; ++c) {
            data[c].resize(node::kWindowSize);
            for (int i = 0; i < node::kWindowSize; ++i)
                data[c][i] = static_cast<float>(dc[c] + amp[c] * sin(2 * M_PI * f0[c] * i / 8000.0));
            channels[c] = data[c].data();
        }
    }
    bool window(int8_t raw) {
        runtime.raw = raw;
        return n.process_window(channels, 1700000000000, &r);
    }
    std::vector<std::pair<std::string, std::string>> drain() {
        std::vector<std::pair<std::string, std::string>> out;
        static char topic[node::kMaxTopic], payload[node::kMaxMessage + 1];
        size_t len;
        while (n.queue().peek(topic, sizeof(topic), payload, sizeof(payload), &len)) {
            out.emplace_back(topic, std::string(payload, len));
            n.queue().pop();
        }
        return out;
    }
    int method(const char* name, const std::string& body, std::string* response) {
        char buf[256];
        const int status = n.handle_method(name, body.data(), body.size(), buf, sizeof(buf));
        *response = buf;
        return status;
    }
    bool desired(const std::string& body, std::string* error) {
        char buf[256] = "";
        const bool ok = n.handle_desired(body.data(), body.size(), buf, sizeof(buf));
        *error = buf;
        return ok;
    }
};

int json_tokens(const std::string& s) {
    std::vector<jsmntok_t> tok(2048);
    jsmn_parser p;
    jsmn_init(&p);
    return jsmn_parse(&p, s.data(), s.size(), tok.data(), tok.size());
}

}  // namespace

TEST(Node, ScoresEachWindowWithTheModelsQuantisation) {
    Rig rig;
    ASSERT_TRUE(rig.window(76));
    EXPECT_FLOAT_EQ(rig.r.score, 204.0f / 256.0f);
    for (int i = 0; i < node::kModelInputs; ++i)
        EXPECT_EQ(rig.r.quantized[i], node::quantize(rig.r.inputs[i], {0.0784313753247261f, -1}));
    double sq = 0;
    for (float v : rig.data[node::kCurrent]) sq += static_cast<double>(v) * v;
    EXPECT_NEAR(rig.r.channels[node::kCurrent].rms, sqrt(sq / node::kWindowSize), 1e-4);
}

TEST(Node, TelemetryGoesToTheLeafTopicAsAFeaturesMessage) {
    Rig rig;
    ASSERT_TRUE(rig.window(-128));
    const auto sent = rig.drain();
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(sent[0].first,
              "devices/node-7/messages/events/$.ct=application%2Fjson&$.ce=utf-8&$.mid=node-7-3-1&type=telemetry");
    const std::string& body = sent[0].second;
    EXPECT_GT(json_tokens(body), 100) << body;
    for (const char* part : {"\"deviceID\":\"node-7\"", "\"fft_data\":{\"current\":{", "\"80-200\":", "\"2000-4000\":",
                             "\"score\":0,", "\"valve\":\"closed\"", "\"modelVersion\":\"1\"", "\"window\":\"hann\""})
        EXPECT_NE(body.find(part), std::string::npos) << part << " in " << body;
}

TEST(Node, OpensTheValveAfterKFaultyWindowsOnItsOwnAndReportsIt) {
    Rig rig;
    ASSERT_TRUE(rig.window(127));
    ASSERT_TRUE(rig.window(127));
    EXPECT_FALSE(rig.r.valve_open);
    ASSERT_TRUE(rig.window(127));
    EXPECT_TRUE(rig.r.valve_open);
    EXPECT_TRUE(rig.r.valve_changed);
    EXPECT_EQ(rig.r.duty, node::servo_duty(node::ServoSettings(), 90));
    const auto sent = rig.drain();
    ASSERT_EQ(sent.size(), 4u);  // 3 telemetry + the valve event
    EXPECT_NE(sent[3].first.find("&type=valve"), std::string::npos);
    EXPECT_NE(sent[3].second.find("\"valve\":\"open\""), std::string::npos) << sent[3].second;
    EXPECT_NE(sent[3].second.find("\"mode\":\"auto\""), std::string::npos);
}

TEST(Node, GatewayCommandOverridesTheValve) {
    Rig rig;
    for (int i = 0; i < 3; ++i) rig.window(127);
    ASSERT_TRUE(rig.r.valve_open);
    std::string response;
    EXPECT_EQ(rig.method("valve", R"({"position":"closed"})", &response), 200);
    EXPECT_NE(response.find("\"valve\":\"closed\""), std::string::npos) << response;
    rig.window(127);
    EXPECT_FALSE(rig.r.valve_open);  // forced closed despite the fault
    EXPECT_EQ(rig.method("valve", R"({"position":"auto"})", &response), 200);
    EXPECT_NE(response.find("\"valve\":\"open\""), std::string::npos);
}

TEST(Node, MalformedCommandsAreRefused) {
    Rig rig;
    std::string response;
    EXPECT_EQ(rig.method("valve", R"({"position":"sideways"})", &response), 400);
    EXPECT_NE(response.find("position"), std::string::npos);
    EXPECT_EQ(rig.method("valve", R"({"position":1})", &response), 400);
    EXPECT_EQ(rig.method("valve", "{not json", &response), 400);
    EXPECT_EQ(rig.method("explode", "{}", &response), 404);
    EXPECT_FALSE(rig.n.valve().open());
    EXPECT_EQ(rig.n.valve().mode(), node::ValveMode::kAuto);
}

TEST(Node, ARefusedDesiredDocumentChangesNothing) {
    Rig rig;
    std::string error;
    EXPECT_FALSE(rig.desired(R"({"threshold":0.9,"tripWindows":0})", &error));
    EXPECT_EQ(error.rfind("tripWindows:", 0), 0u) << error;
    EXPECT_FLOAT_EQ(rig.n.decision().settings.threshold, 0.8f);
    EXPECT_FALSE(rig.desired(R"({"colour":"red"})", &error));
    EXPECT_EQ(error.rfind("colour: unknown desired property", 0), 0u) << error;
    EXPECT_FALSE(rig.desired(R"({"threshold":0.4})", &error));  // below the release level
    EXPECT_EQ(error.rfind("release:", 0), 0u) << error;
    EXPECT_FALSE(rig.desired("[]", &error));
    EXPECT_TRUE(rig.desired(R"({"$version":4,"threshold":0.9,"tripWindows":2})", &error)) << error;
    EXPECT_FLOAT_EQ(rig.n.decision().settings.threshold, 0.9f);
    EXPECT_EQ(rig.n.decision().settings.trip_windows, 2);
}

TEST(Node, ANewModelOverTheAirSwitchesBetweenWindowsAndIsReported) {
    Rig rig;
    const std::string v2 = "MODEL v2";
    std::string error;
    ASSERT_TRUE(rig.desired(R"({"model":{"url":"http://127.0.0.1:9/v2","version":"2","sha256":")" + sha256_hex(v2) +
                                R"(","size":8}})",
                            &error))
        << error;
    uint32_t off, len;
    while (rig.n.ota().next_chunk(&off, &len, 3))
        rig.n.ota().on_chunk(off, reinterpret_cast<const uint8_t*>(v2.data()) + off, len);
    ASSERT_TRUE(rig.window(-128));
    EXPECT_STREQ(rig.n.ota().active().version, "2");
    const auto sent = rig.drain();
    ASSERT_EQ(sent.size(), 2u);
    EXPECT_NE(sent[0].second.find("\"modelVersion\":\"1\""), std::string::npos);  // that window ran on v1
    EXPECT_NE(sent[1].first.find("&type=model"), std::string::npos);
    char reported[1024];
    ASSERT_TRUE(rig.n.reported(reported, sizeof(reported)));
    EXPECT_NE(std::string(reported).find("\"version\":\"2\""), std::string::npos) << reported;
}

TEST(Node, NothingIsSentBeforeActivationOrAfterDeactivation) {
    Rig unactivated(false);
    ASSERT_TRUE(unactivated.window(-128));
    EXPECT_EQ(unactivated.n.queue().count(), 0u);
    Rig rig;
    rig.window(-128);
    std::string response;
    EXPECT_EQ(rig.method("deactivate", "{}", &response), 200);
    EXPECT_EQ(rig.n.queue().count(), 0u);
    rig.window(-128);
    EXPECT_EQ(rig.n.queue().count(), 0u);
    char reported[1024];
    ASSERT_TRUE(rig.n.reported(reported, sizeof(reported)));
    EXPECT_NE(std::string(reported).find("\"activation\":\"deactivated\""), std::string::npos);
}

TEST(Node, OfflineQueueDropsTheOldestAndCounts) {
    Rig rig;
    int windows = 0;
    while (rig.n.queue().dropped() == 0 && windows < 200) {
        rig.window(-128);
        ++windows;
    }
    EXPECT_GT(windows, 10);  // tens of windows fit before anything is dropped
    EXPECT_LT(windows, 200);
    EXPECT_LE(rig.n.queue().bytes(), node::kQueueBytes);
}

TEST(Node, NoHeapAfterInit) {
    Rig rig;
    rig.window(0);  // first window: anything lazily set up by the C library happens here
    const size_t before = mallinfo2().uordblks;
    for (int i = 0; i < 40; ++i) rig.window(static_cast<int8_t>(i % 2 ? 127 : -128));
    std::string error;
    char buf[1024];
    rig.n.reported(buf, sizeof(buf));
    const size_t after = mallinfo2().uordblks;
    EXPECT_EQ(after, before) << "the core allocated " << (after - before) << " bytes after init";
}
