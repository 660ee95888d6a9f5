// The sensor node without its board: one window in, features, a level-1 score, the valve decision,
// telemetry into the bounded offline queue; desired properties and commands from the gateway; OTA
// models; activation. The board layer (main/ on the ESP32, firmware/host for the emulated node)
// samples, moves bytes and drives the servo with what this class decides.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "node/activation.hpp"
#include "node/config.hpp"
#include "node/decision.hpp"
#include "node/features.hpp"
#include "node/model.hpp"
#include "node/ota.hpp"
#include "node/queue.hpp"
#include "node/servo.hpp"

namespace node {

constexpr size_t kQueueBytes = 48 * 1024;  ///< ~30 windows of telemetry while offline
constexpr size_t kMaxTopic = 192;
constexpr size_t kMaxMessage = 2560;  ///< a telemetry message is ~1.8 KB
constexpr const char* kFirmwareVersion = "0.1.0";

struct NodeConfig {
    char device_id[kMaxDeviceId] = "";
    uint32_t boot = 0;  ///< boot counter: makes message ids unique across reboots
    float sample_rate_hz = kDefaultSampleRateHz;
};

struct WindowResult {
    ChannelFeatures channels[kChannels];
    float inputs[kModelInputs];
    int8_t quantized[kModelInputs];
    int8_t raw_score;
    float score;
    bool fault;
    bool valve_open;
    bool valve_changed;
    uint32_t duty;
    bool queued;  ///< telemetry was queued (false while not activated)
};

class Node {
public:
    Node(RealFft& fft, Inference& runtime, ModelStore& store);

    /// Boot: load the active model (false when no model loads: the node then only reports).
    bool init(const NodeConfig& config, int64_t now_ms);
    /// Write a model into slot 0 and run it (a factory image, or the emulated node's first boot).
    bool install_factory(const uint8_t* model, size_t size, const char* version) {
        model_ok_ = ota_.install_factory(model, size, version, &io_);
        return model_ok_;
    }
    /// One window per channel (kWindowSize samples each). False when the samples are unusable.
    bool process_window(const float* const channels[kChannels], int64_t timestamp_ms, WindowResult* out);

    /// A desired-properties document or patch; false with the reason (naming the field) when refused.
    bool handle_desired(const char* json, size_t len, char* error, size_t cap);
    /// A direct method: `valve` {"position": "open"|"closed"|"auto"} or `deactivate` {}; the response
    /// body goes to `response`. Returns the status code (200, 400, 404).
    int handle_method(const char* name, const char* json, size_t len, char* response, size_t cap);

    /// The reported properties document.
    bool reported(char* out, size_t cap) const;
    /// A telemetry-topic event (valve moved, model changed or refused) is queued like telemetry.
    void queue_event(const char* type, const char* json_object_body);

    /// Leaf telemetry topic with url-encoded properties, for message `seq`.
    bool topic(const char* type, uint32_t seq, char* out, size_t cap) const;

    MessageQueue<kQueueBytes>& queue() { return queue_; }
    Activation& activation() { return activation_; }
    Ota& ota() { return ota_; }
    Decision& decision() { return decision_; }
    Valve& valve() { return valve_; }
    const ModelIo& model_io() const { return io_; }
    bool model_loaded() const { return model_ok_; }
    uint32_t windows() const { return windows_; }
    const char* device_id() const { return config_.device_id; }

    InputSpec spec;

private:
    bool encode_telemetry(const WindowResult& r, int64_t timestamp_ms, char* out, size_t cap) const;
    void enqueue(const char* type, const char* body, size_t len);

    FeatureExtractor features_;
    Inference& runtime_;
    Ota ota_;
    Decision decision_;
    Valve valve_;
    Activation activation_;
    MessageQueue<kQueueBytes> queue_;
    NodeConfig config_;
    ModelIo io_;
    bool model_ok_ = false;
    uint32_t seq_ = 0;
    uint32_t windows_ = 0;
    char topic_buf_[kMaxTopic];
    char message_buf_[kMaxMessage];
    char last_error_[200] = "";
};

}  // namespace node
