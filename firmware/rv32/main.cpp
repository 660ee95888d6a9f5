// Freestanding rv32imc image of the core: proof that it compiles without libstdc++, exceptions or
// RTTI, links no allocator, and how much flash (text + data) and static RAM (data + bss) it takes.
// The board layer (Wi-Fi, MQTT, TFLM) is not in it: their sizes are ESP-IDF's and esp-tflite-micro's.
// It runs the pipeline on a synthetic window so nothing is optimised away; it can be run under
// qemu-system-riscv32 with semihosting.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kiss_real_fft.hpp"
#include "node/node.hpp"

extern "C" {
// KissFFT is built with KISS_FFT_MALLOC/FREE pointing here: it is only ever given our buffer, and
// a call would be a bug (it returns no memory, so kiss_fftr_alloc would fail visibly).
void* node_no_malloc(size_t) { return nullptr; }
void node_no_free(void*) {}
// Pure virtual calls cannot happen; without libsupc++ this symbol must exist.
void __cxa_pure_virtual() {
    for (;;) {
    }
}
}

namespace {

/// Two model slots in RAM stand in for the flash partitions.
class RamStore final : public node::ModelStore {
public:
    bool erase(int slot) override {
        memset(slot_[slot], 0xff, sizeof(slot_[slot]));
        return true;
    }
    bool write(int slot, size_t offset, const uint8_t* data, size_t len) override {
        if (offset + len > sizeof(slot_[slot])) return false;
        memcpy(slot_[slot] + offset, data, len);
        return true;
    }
    const uint8_t* map(int slot, size_t) override { return slot_[slot]; }
    bool load_meta(node::ModelMeta* m) override {
        *m = meta_;
        return true;
    }
    bool save_meta(const node::ModelMeta& m) override {
        meta_ = m;
        return true;
    }

private:
    uint8_t slot_[2][1024];  // small: the real slots are flash partitions, not RAM
    node::ModelMeta meta_;
};

/// The board runs TFLM here; this image only proves the core, so no model loads.
class NoRuntime final : public node::Inference {
public:
    bool load(const uint8_t*, size_t, node::ModelIo*) override { return false; }
    bool invoke(const int8_t*, int8_t*) override { return false; }
};

node::KissRealFft g_fft;
RamStore g_store;
NoRuntime g_runtime;
node::Node g_node(g_fft, g_runtime, g_store);
float g_samples[node::kChannels][node::kWindowSize];
node::WindowResult g_result;
char g_topic[node::kMaxTopic];
char g_payload[node::kMaxMessage + 1];

}  // namespace

int main() {
    if (!g_fft.init(node::kWindowSize)) return 1;
    node::NodeConfig cfg;
    node::copy_string(cfg.device_id, sizeof(cfg.device_id), "rv32-node");
    g_node.init(cfg, 0);
    g_node.activation().start(cfg.device_id, "key", "credential", 0);
    const float* channels[node::kChannels];
    for (int c = 0; c < node::kChannels; ++c) {
        for (int i = 0; i < node::kWindowSize; ++i)
            g_samples[c][i] = (c + 1) * sinf(2.0f * 3.14159265f * 50.0f * (c + 1) * i / 8000.0f);
        channels[c] = g_samples[c];
    }
    if (!g_node.process_window(channels, 0, &g_result)) return 2;
    const char desired[] = "{\"threshold\":0.9}";
    char error[128];
    g_node.handle_desired(desired, sizeof(desired) - 1, error, sizeof(error));
    size_t len = 0;
    if (!g_node.queue().peek(g_topic, sizeof(g_topic), g_payload, sizeof(g_payload), &len)) return 3;
    const node::ChannelFeatures& v = g_result.channels[node::kVibration];
    printf("rv32 node: %u windows, message of %u bytes, vibration rms %.6g, peak %.6g Hz %.6g, band 80-200 %.6g\n",
           unsigned(g_node.windows()), unsigned(len), double(v.rms), double(v.peaks[0].hz), double(v.peaks[0].amplitude),
           double(v.bands[node::band_index(v, 80)]));
    return 0;
}
