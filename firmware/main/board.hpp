// The board layer's pieces (ESP-IDF): sampling, servo, flash, network. Each wraps one driver.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "node/config.hpp"
#include "node/ota.hpp"

namespace board {

/// ADC continuous mode (current, vibration, temperature) and I2S (sound), one window per call.
bool sensors_init();
bool sensors_read_window(float* const channels[node::kChannels]);

/// LEDC PWM for the valve's servo.
bool servo_init(uint32_t initial_duty);
void servo_set_duty(uint32_t duty);

/// The model slots (partitions model_a/model_b, memory-mapped) and their record in NVS.
class FlashModelStore final : public node::ModelStore {
public:
    bool init();
    bool erase(int slot) override;
    bool write(int slot, size_t offset, const uint8_t* data, size_t len) override;
    const uint8_t* map(int slot, size_t size) override;
    bool load_meta(node::ModelMeta* meta) override;
    bool save_meta(const node::ModelMeta& meta) override;
};

/// NVS strings (credential, device id, activation key) and the boot counter.
bool nvs_get(const char* key, char* out, size_t cap);
bool nvs_set(const char* key, const char* value);
uint32_t next_boot_count();

/// Wi-Fi station, HTTP (activation, ranged model download) and esp-mqtt.
bool wifi_start();
int http_post_json(const char* url, const char* body, char* response, size_t cap);  // status, or -1
int http_get_range(const char* url, uint32_t offset, uint32_t len, uint8_t* out);   // bytes, or -1

struct Incoming {
    enum Kind : uint8_t { kDesired, kMethod } kind;
    char name[32];
    char response_topic[160];
    uint8_t correlation[32];
    size_t correlation_len;
    char payload[1024];
    size_t len;
};

bool mqtt_start(const char* uri, const char* device_id, const char* password);
bool mqtt_connected();
bool mqtt_refused();  // the broker refused the credential
bool mqtt_publish_qos1(const char* topic, const char* payload, size_t len);  // true once PUBACKed
bool mqtt_respond(const Incoming& request, int status, const char* body);
bool mqtt_next_incoming(Incoming* out);

}  // namespace board
