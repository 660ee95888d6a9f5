#include <gtest/gtest.h>

#include <string.h>

#include <string>

#include "helpers.hpp"
#include "node/ota.hpp"

using testing_node::MemoryStore;
using testing_node::ScriptedRuntime;
using testing_node::sha256_hex;

namespace {

struct Rig {
    MemoryStore store;
    ScriptedRuntime runtime;
    node::Ota ota{store, runtime};
    node::ModelIo io;
    Rig() {
        const std::string v1 = "MODEL v1";
        EXPECT_TRUE(ota.install_factory(reinterpret_cast<const uint8_t*>(v1.data()), v1.size(), "1", &io));
    }
    node::ModelRequest request(const std::string& content, const char* version, const std::string& sha = "") {
        node::ModelRequest r;
        strcpy(r.url, "http://127.0.0.1:1/m.tflite");
        strcpy(r.version, version);
        strcpy(r.sha256, (sha.empty() ? sha256_hex(content) : sha).c_str());
        r.size = static_cast<uint32_t>(content.size());
        return r;
    }
    void download(const std::string& content, uint32_t chunk = 3) {
        uint32_t off, len;
        while (ota.next_chunk(&off, &len, chunk))
            if (!ota.on_chunk(off, reinterpret_cast<const uint8_t*>(content.data()) + off, len)) break;
    }
};

bool parse_request(const std::string& json, node::ModelRequest* out, std::string* error) {
    node::JsonDoc d;
    const char* why = nullptr;
    char err[200] = "";
    if (!d.parse(json.data(), json.size(), &why)) return false;
    const bool ok = node::parse_model_request(d, d.find(0, "model"), out, err, sizeof(err));
    *error = err;
    return ok;
}

}  // namespace

TEST(Ota, DownloadsVerifiesAndSwitchesAtTheWindowBoundary) {
    Rig rig;
    const std::string v2 = "MODEL v2 with more bytes";
    char err[200];
    ASSERT_TRUE(rig.ota.request(rig.request(v2, "2"), err, sizeof(err))) << err;
    EXPECT_EQ(rig.ota.state(), node::OtaState::kDownloading);
    rig.download(v2);
    EXPECT_EQ(rig.ota.state(), node::OtaState::kStaged);
    EXPECT_STREQ(rig.ota.active().version, "1");  // still running v1 until the boundary
    EXPECT_EQ(rig.runtime.loaded, "MODEL v1");
    ASSERT_TRUE(rig.ota.switch_if_staged(&rig.io));
    EXPECT_STREQ(rig.ota.active().version, "2");
    EXPECT_EQ(rig.runtime.loaded, v2);
    EXPECT_EQ(rig.store.meta.active, 1);  // persisted
    EXPECT_EQ(rig.ota.state(), node::OtaState::kIdle);
}

TEST(Ota, BadSha256IsRefusedAndTheOldModelKeepsRunning) {
    Rig rig;
    const std::string v2 = "MODEL v2";
    char err[200];
    ASSERT_TRUE(rig.ota.request(rig.request(v2, "2", std::string(64, 'a')), err, sizeof(err)));
    rig.download(v2);
    EXPECT_EQ(rig.ota.state(), node::OtaState::kFailed);
    EXPECT_NE(strstr(rig.ota.last_error(), "sha256"), nullptr) << rig.ota.last_error();
    EXPECT_FALSE(rig.ota.switch_if_staged(&rig.io));
    EXPECT_STREQ(rig.ota.active().version, "1");
    EXPECT_EQ(rig.runtime.loaded, "MODEL v1");
    EXPECT_EQ(rig.store.meta.active, 0);
}

TEST(Ota, AModelThatDoesNotLoadFallsBackToThePreviousOne) {
    Rig rig;
    for (const std::string bad : {std::string("garbage, not a model"), std::string("MODEL but wide inputs")}) {
        char err[200];
        ASSERT_TRUE(rig.ota.request(rig.request(bad, "2"), err, sizeof(err)));
        rig.download(bad);
        ASSERT_EQ(rig.ota.state(), node::OtaState::kStaged);
        EXPECT_FALSE(rig.ota.switch_if_staged(&rig.io));
        EXPECT_EQ(rig.ota.state(), node::OtaState::kFailed);
        EXPECT_NE(strstr(rig.ota.last_error(), "failed to load; running 1"), nullptr) << rig.ota.last_error();
        EXPECT_EQ(rig.runtime.loaded, "MODEL v1");  // reloaded
        EXPECT_STREQ(rig.ota.active().version, "1");
    }
}

TEST(Ota, BootFallsBackWhenTheActiveSlotNoLongerLoads) {
    Rig rig;
    const std::string v2 = "MODEL v2";
    char err[200];
    ASSERT_TRUE(rig.ota.request(rig.request(v2, "2"), err, sizeof(err)));
    rig.download(v2);
    ASSERT_TRUE(rig.ota.switch_if_staged(&rig.io));
    rig.store.slots[1].assign(8, 'x');  // flash corrupted under the active model
    node::Ota rebooted(rig.store, rig.runtime);
    node::ModelIo io;
    ASSERT_TRUE(rebooted.boot(&io));
    EXPECT_STREQ(rebooted.active().version, "1");
    EXPECT_EQ(rig.store.meta.active, 0);
}

TEST(Ota, TheRunningVersionIsNotDownloadedAgain) {
    Rig rig;
    char err[200];
    ASSERT_TRUE(rig.ota.request(rig.request("MODEL v1", "1"), err, sizeof(err)));
    EXPECT_EQ(rig.ota.state(), node::OtaState::kIdle);
}

TEST(Ota, DownloadErrorsGiveUpAfterThree) {
    Rig rig;
    char err[200];
    ASSERT_TRUE(rig.ota.request(rig.request("MODEL v2", "2"), err, sizeof(err)));
    rig.ota.on_download_error("timeout");
    rig.ota.on_download_error("timeout");
    EXPECT_EQ(rig.ota.state(), node::OtaState::kDownloading);
    rig.ota.on_download_error("connection refused");
    EXPECT_EQ(rig.ota.state(), node::OtaState::kFailed);
    EXPECT_STREQ(rig.ota.active().version, "1");
}

TEST(Ota, ChunksOutOfOrderOrTooLongAreRefused) {
    Rig rig;
    const std::string v2 = "MODEL v2";
    char err[200];
    ASSERT_TRUE(rig.ota.request(rig.request(v2, "2"), err, sizeof(err)));
    EXPECT_FALSE(rig.ota.on_chunk(4, reinterpret_cast<const uint8_t*>("xx"), 2));  // not the next offset
    EXPECT_FALSE(rig.ota.on_chunk(0, reinterpret_cast<const uint8_t*>("MODEL v2 and more"), 17));
    EXPECT_EQ(rig.ota.state(), node::OtaState::kFailed);
}

TEST(Ota, MalformedModelRequestsAreRefusedNamingTheField) {
    const std::string sha(64, 'a');
    const struct {
        std::string json;
        const char* field;
    } cases[] = {
        {R"({"model":"http://x"})", "model:"},
        {R"({"model":{"url":"ftp://x","version":"2","sha256":")" + sha + R"(","size":10}})", "model.url"},
        {R"({"model":{"url":"http://x","version":"two words","sha256":")" + sha + R"(","size":10}})", "model.version"},
        {R"({"model":{"url":"http://x","version":"2","sha256":"ABC","size":10}})", "model.sha256"},
        {R"({"model":{"url":"http://x","version":"2","sha256":")" + sha + R"(","size":1e9}})", "model.size"},
        {R"({"model":{"url":"http://x","version":"2","sha256":")" + sha + R"(","size":1.5}})", "model.size"},
        {R"({"model":{"url":"http://x","version":"2","sha256":")" + sha + R"(","size":10,"x":1}})", "model.x"},
    };
    for (const auto& c : cases) {
        node::ModelRequest r;
        std::string error;
        EXPECT_FALSE(parse_request(c.json, &r, &error)) << c.json;
        EXPECT_EQ(error.rfind(c.field, 0), 0u) << c.json << " -> " << error;
    }
    node::ModelRequest r;
    std::string error;
    EXPECT_TRUE(parse_request(R"({"model":{"url":"http://127.0.0.1/m","version":"2.1-rc","sha256":")" + sha +
                                  R"(","size":8208}})",
                              &r, &error))
        << error;
    EXPECT_EQ(r.size, 8208u);
}
