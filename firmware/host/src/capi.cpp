// The emulated node's C ABI: the same core the board runs, with a host board layer (KissFFT,
// files as flash) and inference delegated to the caller (Python: the tflite-micro runtime).
// Loaded with ctypes by firmware/host/emulated_node. Up to kMaxNodes nodes per process.
#include <new>

#include <stdio.h>
#include <string.h>

#include "file_store.hpp"
#include "kiss_real_fft.hpp"
#include "node/node.hpp"

extern "C" {

struct fw_model_io {
    int32_t inputs;
    int32_t outputs;
    float input_scale;
    int32_t input_zero_point;
    float output_scale;
    int32_t output_zero_point;
    uint64_t arena_used;
};

struct fw_window {
    float score;
    int32_t raw_score;
    int32_t fault;
    int32_t valve_open;
    int32_t valve_changed;
    uint32_t duty;
    int32_t queued;
    float inputs[node::kModelInputs];
    int8_t quantized[node::kModelInputs];
};

typedef int (*fw_load_fn)(void* ctx, const uint8_t* model, size_t size, fw_model_io* io);
typedef int (*fw_invoke_fn)(void* ctx, const int8_t* input, int8_t* output);

}  // extern "C"

namespace {

class CallbackInference final : public node::Inference {
public:
    fw_load_fn load_fn = nullptr;
    fw_invoke_fn invoke_fn = nullptr;
    void* ctx = nullptr;
    bool load(const uint8_t* model, size_t size, node::ModelIo* io) override {
        fw_model_io c{};
        if (!load_fn || !load_fn(ctx, model, size, &c)) return false;
        io->inputs = c.inputs;
        io->outputs = c.outputs;
        io->input = {c.input_scale, c.input_zero_point};
        io->output = {c.output_scale, c.output_zero_point};
        io->arena_used = c.arena_used;
        return true;
    }
    bool invoke(const int8_t* input, int8_t* output) override { return invoke_fn && invoke_fn(ctx, input, output); }
};

struct Instance {
    node::KissRealFft fft;
    CallbackInference runtime;
    host::FileModelStore store;
    alignas(node::Node) unsigned char node_mem[sizeof(node::Node)];
    node::Node* node = nullptr;
};

constexpr int kMaxNodes = 8;
Instance g_instances[kMaxNodes];
bool g_used[kMaxNodes];

node::Node* get(int h) { return h >= 0 && h < kMaxNodes && g_used[h] ? g_instances[h].node : nullptr; }

}  // namespace

extern "C" {

/// A node with its flash in `state_dir`; returns a handle >= 0, or -1.
int fw_create(const char* state_dir, const char* device_id, uint32_t boot, float sample_rate_hz, fw_load_fn load,
              fw_invoke_fn invoke, void* ctx) {
    for (int h = 0; h < kMaxNodes; ++h) {
        if (g_used[h]) continue;
        Instance& in = g_instances[h];
        if (!in.fft.init(node::kWindowSize) || !in.store.open(state_dir)) return -1;
        in.runtime.load_fn = load;
        in.runtime.invoke_fn = invoke;
        in.runtime.ctx = ctx;
        in.node = new (in.node_mem) node::Node(in.fft, in.runtime, in.store);  // placement: static storage
        node::NodeConfig cfg;
        if (!node::copy_string(cfg.device_id, sizeof(cfg.device_id), device_id)) return -1;
        cfg.boot = boot;
        cfg.sample_rate_hz = sample_rate_hz;
        in.node->init(cfg, 0);
        g_used[h] = true;
        return h;
    }
    return -1;
}

void fw_destroy(int h) {
    if (get(h)) {
        g_instances[h].node->~Node();
        g_used[h] = false;
    }
}

int fw_model_loaded(int h) { return get(h) && get(h)->model_loaded(); }

int fw_install_factory(int h, const uint8_t* model, size_t size, const char* version) {
    node::Node* n = get(h);
    return n && n->install_factory(model, size, version);
}

int fw_process(int h, const float* samples, int64_t timestamp_ms, fw_window* out) {
    node::Node* n = get(h);
    if (!n) return 0;
    const float* channels[node::kChannels];
    for (int c = 0; c < node::kChannels; ++c) channels[c] = samples + c * node::kWindowSize;
    static node::WindowResult r;
    if (!n->process_window(channels, timestamp_ms, &r)) return 0;
    out->score = r.score;
    out->raw_score = r.raw_score;
    out->fault = r.fault;
    out->valve_open = r.valve_open;
    out->valve_changed = r.valve_changed;
    out->duty = r.duty;
    out->queued = r.queued;
    for (int i = 0; i < node::kModelInputs; ++i) {
        out->inputs[i] = r.inputs[i];
        out->quantized[i] = r.quantized[i];
    }
    return 1;
}

/// The oldest queued message: payload length, or -1 when empty (or a buffer is too small).
int fw_queue_peek(int h, char* topic, size_t topic_cap, char* payload, size_t payload_cap) {
    node::Node* n = get(h);
    size_t len = 0;
    if (!n || !n->queue().peek(topic, topic_cap, payload, payload_cap, &len)) return -1;
    return static_cast<int>(len);
}

void fw_queue_pop(int h) {
    if (node::Node* n = get(h)) n->queue().pop();
}

int fw_queue_depth(int h) { return get(h) ? static_cast<int>(get(h)->queue().count()) : -1; }
uint32_t fw_queue_dropped(int h) { return get(h) ? get(h)->queue().dropped() : 0; }
size_t fw_queue_capacity(void) { return node::kQueueBytes; }

int fw_desired(int h, const char* json, size_t len, char* error, size_t cap) {
    node::Node* n = get(h);
    if (cap) error[0] = 0;
    return n && n->handle_desired(json, len, error, cap);
}

int fw_method(int h, const char* name, const char* json, size_t len, char* response, size_t cap) {
    node::Node* n = get(h);
    return n ? n->handle_method(name, json, len, response, cap) : 500;
}

int fw_reported(int h, char* out, size_t cap) {
    node::Node* n = get(h);
    return n && n->reported(out, cap);
}

int fw_ota_next(int h, uint32_t* offset, uint32_t* len) {
    node::Node* n = get(h);
    return n && n->ota().next_chunk(offset, len);
}

int fw_ota_chunk(int h, uint32_t offset, const uint8_t* data, size_t len) {
    node::Node* n = get(h);
    return n && n->ota().on_chunk(offset, data, len);
}

int fw_ota_url(int h, char* out, size_t cap) {
    node::Node* n = get(h);
    return n && node::copy_string(out, cap, n->ota().pending().url);
}

void fw_ota_error(int h, const char* why) {
    if (node::Node* n = get(h)) n->ota().on_download_error(why);
}

void fw_activation_start(int h, const char* endpoint, const char* key, const char* stored, int64_t now_ms) {
    node::Node* n = get(h);
    if (!n) return;
    node::copy_string(n->activation().settings.endpoint, sizeof(n->activation().settings.endpoint), endpoint);
    n->activation().start(n->device_id(), key, stored, now_ms);
}

int fw_activation_due(int h, int64_t now_ms) { return get(h) && get(h)->activation().request_due(now_ms); }

int fw_activation_body(int h, char* out, size_t cap) { return get(h) && get(h)->activation().request_body(out, cap); }

int fw_activation_response(int h, int status, const char* body, size_t len, int64_t now_ms) {
    node::Node* n = get(h);
    return n ? static_cast<int>(n->activation().on_response(status, body, len, now_ms)) : -1;
}

void fw_activation_transport_error(int h, int64_t now_ms) {
    if (node::Node* n = get(h)) n->activation().on_transport_error(now_ms);
}

void fw_activation_credential_refused(int h, int64_t now_ms) {
    if (node::Node* n = get(h)) n->activation().on_credential_refused(now_ms);
}

int fw_activation_state(int h) { return get(h) ? static_cast<int>(get(h)->activation().state()) : -1; }

/// Copies the credential; returns 1 when it changed since the last call (the caller persists it).
int fw_activation_credential(int h, char* out, size_t cap) {
    node::Node* n = get(h);
    if (!n || !node::copy_string(out, cap, n->activation().credential())) return 0;
    const bool dirty = n->activation().credential_dirty();
    n->activation().stored();
    return dirty;
}

int fw_activation_error(int h, char* out, size_t cap) {
    node::Node* n = get(h);
    return n && node::copy_string(out, cap, n->activation().last_error());
}

uint32_t fw_servo_duty(float angle_deg) { return node::servo_duty(node::ServoSettings(), angle_deg); }

}  // extern "C"
