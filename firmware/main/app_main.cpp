// ESP32-C3 sensor node: the board loop around the portable core (firmware/components/node_core).
// The same loop runs on the host as the emulated node (firmware/host/emulated_node/node.py).
#include <stdio.h>
#include <string.h>

#include "board.hpp"
#include "board_config.h"
#include "esp_dsp_fft.hpp"
#include "esp_log.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "node/node.hpp"
#include "nvs_flash.h"
#include "tflm_inference.hpp"

namespace {

const char* TAG = "node";
board::EspDspFft g_fft;
board::TflmInference g_tflm;
board::FlashModelStore g_flash;
node::Node g_node(g_fft, g_tflm, g_flash);  // static: every buffer is sized at compile time
float g_samples[node::kChannels][node::kWindowSize];
node::WindowResult g_result;
char g_topic[node::kMaxTopic];
char g_payload[node::kMaxMessage + 1];
char g_reply[512];
uint8_t g_chunk[board::kOtaChunk];
board::Incoming g_in;

int64_t now_ms() { return esp_timer_get_time() / 1000; }

void persist_credential() {
    if (!g_node.activation().credential_dirty()) return;
    board::nvs_set("credential", g_node.activation().credential());
    g_node.activation().stored();
}

void activate(const char* endpoint) {
    char body[256];
    while (!g_node.activation().may_send()) {
        if (g_node.activation().request_due(now_ms()) && g_node.activation().request_body(body, sizeof(body))) {
            const int status = board::http_post_json(endpoint, body, g_reply, sizeof(g_reply));
            if (status < 0)
                g_node.activation().on_transport_error(now_ms());
            else
                g_node.activation().on_response(status, g_reply, strlen(g_reply), now_ms());
            ESP_LOGI(TAG, "activation: %s %s", node::activation_state_name(g_node.activation().state()),
                     g_node.activation().last_error());
        }
        persist_credential();
        vTaskDelay(pdMS_TO_TICKS(500));
    }
}

void handle_incoming() {
    while (board::mqtt_next_incoming(&g_in)) {
        if (g_in.kind == board::Incoming::kDesired) {
            if (!g_node.handle_desired(g_in.payload, g_in.len, g_reply, sizeof(g_reply)))
                ESP_LOGE(TAG, "desired properties refused: %s", g_reply);
        } else {
            const int status = g_node.handle_method(g_in.name, g_in.payload, g_in.len, g_reply, sizeof(g_reply));
            board::mqtt_respond(g_in, status, g_reply);
        }
        char topic[96];
        snprintf(topic, sizeof(topic), "devices/%s/twin/reported", g_node.device_id());
        if (g_node.reported(g_payload, sizeof(g_payload))) board::mqtt_publish_qos1(topic, g_payload, strlen(g_payload));
    }
}

void ota_step() {
    uint32_t offset, len;
    for (int i = 0; i < 4 && g_node.ota().next_chunk(&offset, &len, sizeof(g_chunk)); ++i) {
        const int got = board::http_get_range(g_node.ota().pending().url, offset, len, g_chunk);
        if (got <= 0) {
            g_node.ota().on_download_error("download failed");
            return;
        }
        g_node.ota().on_chunk(offset, g_chunk, static_cast<size_t>(got));
    }
}

void flush() {
    size_t len = 0;
    while (board::mqtt_connected() && g_node.queue().peek(g_topic, sizeof(g_topic), g_payload, sizeof(g_payload), &len)) {
        if (!board::mqtt_publish_qos1(g_topic, g_payload, len)) return;  // kept: sent again later
        g_node.queue().pop();
    }
}

}  // namespace

extern "C" void app_main() {
    if (nvs_flash_init() != ESP_OK || !g_flash.init() || !g_fft.init()) {
        ESP_LOGE(TAG, "flash or FFT init failed");
        return;
    }
    node::NodeConfig cfg;
    if (!board::nvs_get("device_id", cfg.device_id, sizeof(cfg.device_id))) {
        ESP_LOGE(TAG, "no device id in NVS: provision with `idf.py nvs` (firmware/README.md)");
        return;
    }
    cfg.boot = board::next_boot_count();
    if (!g_node.init(cfg, now_ms())) ESP_LOGE(TAG, "no model loads: reporting only until one arrives");
    char key[node::kMaxCredential] = "", credential[node::kMaxCredential] = "";
    board::nvs_get("activation_key", key, sizeof(key));
    board::nvs_get("credential", credential, sizeof(credential));
    g_node.activation().start(cfg.device_id, key, credential, now_ms());

    board::sensors_init();
    board::servo_init(g_node.valve().duty());
    board::wifi_start();
    activate(CONFIG_OUTPOST_ACTIVATION_URL);
    board::mqtt_start(CONFIG_OUTPOST_HUB_URI, cfg.device_id, g_node.activation().credential());

    float* channels[node::kChannels];
    for (int c = 0; c < node::kChannels; ++c) channels[c] = g_samples[c];
    for (;;) {
        if (!board::sensors_read_window(channels)) continue;
        handle_incoming();
        g_node.process_window(channels, now_ms(), &g_result);
        board::servo_set_duty(g_result.duty);  // on the node itself: no network involved
        if (board::mqtt_refused()) {
            g_node.activation().on_credential_refused(now_ms());
            persist_credential();
            activate(CONFIG_OUTPOST_ACTIVATION_URL);
            esp_restart();  // reconnect with the new credential
        }
        flush();
        ota_step();
    }
}
