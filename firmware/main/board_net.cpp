#include <stdio.h>
#include <string.h>

#include "board.hpp"
#include "esp_event.h"
#include "esp_http_client.h"
#include "esp_netif.h"
#include "esp_wifi.h"
#include "freertos/FreeRTOS.h"
#include "freertos/event_groups.h"
#include "freertos/queue.h"
#include "mqtt_client.h"

namespace board {

namespace {
EventGroupHandle_t g_events;
constexpr EventBits_t kWifiUp = BIT0, kMqttUp = BIT1, kRefused = BIT2, kPubAck = BIT3;
esp_mqtt_client_handle_t g_mqtt;
QueueHandle_t g_incoming;
int g_waiting_msg_id = -1;
char g_device[node::kMaxDeviceId];

void on_wifi(void*, esp_event_base_t base, int32_t id, void*) {
    if (base == WIFI_EVENT && (id == WIFI_EVENT_STA_START || id == WIFI_EVENT_STA_DISCONNECTED)) {
        xEventGroupClearBits(g_events, kWifiUp);
        esp_wifi_connect();
    } else if (base == IP_EVENT && id == IP_EVENT_STA_GOT_IP) {
        xEventGroupSetBits(g_events, kWifiUp);
    }
}

void on_mqtt(void*, esp_event_base_t, int32_t id, void* data) {
    auto* e = static_cast<esp_mqtt_event_handle_t>(data);
    char topic[96];
    switch (id) {
        case MQTT_EVENT_CONNECTED:
            snprintf(topic, sizeof(topic), "devices/%s/twin/desired/#", g_device);
            esp_mqtt_client_subscribe(g_mqtt, topic, 1);
            snprintf(topic, sizeof(topic), "devices/%s/methods/#", g_device);
            esp_mqtt_client_subscribe(g_mqtt, topic, 1);
            xEventGroupSetBits(g_events, kMqttUp);
            break;
        case MQTT_EVENT_DISCONNECTED:
            xEventGroupClearBits(g_events, kMqttUp);
            break;
        case MQTT_EVENT_ERROR:
            if (e->error_handle->error_type == MQTT_ERROR_TYPE_CONNECTION_REFUSED &&
                (e->error_handle->connect_return_code == MQTT_CONNECTION_REFUSE_NOT_AUTHORIZED ||
                 e->error_handle->connect_return_code == MQTT_CONNECTION_REFUSE_BAD_USERNAME))
                xEventGroupSetBits(g_events, kRefused);
            break;
        case MQTT_EVENT_PUBLISHED:
            if (e->msg_id == g_waiting_msg_id) xEventGroupSetBits(g_events, kPubAck);
            break;
        case MQTT_EVENT_DATA: {
            static Incoming in;  // copied into the queue: no heap
            memset(&in, 0, sizeof(in));
            const char* methods = strstr(e->topic, "/methods/");
            in.kind = methods && methods < e->topic + e->topic_len ? Incoming::kMethod : Incoming::kDesired;
            if (in.kind == Incoming::kMethod) {
                const int n = static_cast<int>(e->topic + e->topic_len - (methods + 9));
                snprintf(in.name, sizeof(in.name), "%.*s", n, methods + 9);
                if (e->property && e->property->response_topic)
                    snprintf(in.response_topic, sizeof(in.response_topic), "%.*s", e->property->response_topic_len,
                             e->property->response_topic);
                if (e->property && e->property->correlation_data_len <= int(sizeof(in.correlation))) {
                    memcpy(in.correlation, e->property->correlation_data, e->property->correlation_data_len);
                    in.correlation_len = e->property->correlation_data_len;
                }
            }
            if (e->data_len < int(sizeof(in.payload)) && e->current_data_offset == 0 && e->data_len == e->total_data_len) {
                memcpy(in.payload, e->data, e->data_len);
                in.len = e->data_len;
                xQueueSend(g_incoming, &in, 0);
            }
            break;
        }
        default:
            break;
    }
}
}  // namespace

bool wifi_start() {
    g_events = xEventGroupCreate();
    g_incoming = xQueueCreate(4, sizeof(Incoming));
    esp_netif_init();
    esp_event_loop_create_default();
    esp_netif_create_default_wifi_sta();
    wifi_init_config_t init = WIFI_INIT_CONFIG_DEFAULT();
    if (esp_wifi_init(&init) != ESP_OK) return false;
    esp_event_handler_register(WIFI_EVENT, ESP_EVENT_ANY_ID, on_wifi, nullptr);
    esp_event_handler_register(IP_EVENT, IP_EVENT_STA_GOT_IP, on_wifi, nullptr);
    wifi_config_t cfg = {};
    snprintf(reinterpret_cast<char*>(cfg.sta.ssid), sizeof(cfg.sta.ssid), "%s", CONFIG_OUTPOST_WIFI_SSID);
    snprintf(reinterpret_cast<char*>(cfg.sta.password), sizeof(cfg.sta.password), "%s", CONFIG_OUTPOST_WIFI_PASSWORD);
    esp_wifi_set_mode(WIFI_MODE_STA);
    esp_wifi_set_config(WIFI_IF_STA, &cfg);
    return esp_wifi_start() == ESP_OK;
}

int http_post_json(const char* url, const char* body, char* response, size_t cap) {
    if (!(xEventGroupGetBits(g_events) & kWifiUp)) return -1;
    esp_http_client_config_t cfg = {};
    cfg.url = url;
    cfg.method = HTTP_METHOD_POST;
    cfg.timeout_ms = 5000;
    esp_http_client_handle_t c = esp_http_client_init(&cfg);
    esp_http_client_set_header(c, "Content-Type", "application/json");
    int status = -1;
    if (esp_http_client_open(c, strlen(body)) == ESP_OK && esp_http_client_write(c, body, strlen(body)) >= 0 &&
        esp_http_client_fetch_headers(c) >= 0) {
        const int n = esp_http_client_read_response(c, response, cap - 1);
        response[n > 0 ? n : 0] = 0;
        status = esp_http_client_get_status_code(c);
    }
    esp_http_client_cleanup(c);
    return status;
}

int http_get_range(const char* url, uint32_t offset, uint32_t len, uint8_t* out) {
    esp_http_client_config_t cfg = {};
    cfg.url = url;
    cfg.timeout_ms = 10000;
    esp_http_client_handle_t c = esp_http_client_init(&cfg);
    char range[48];
    snprintf(range, sizeof(range), "bytes=%lu-%lu", static_cast<unsigned long>(offset),
             static_cast<unsigned long>(offset + len - 1));
    esp_http_client_set_header(c, "Range", range);
    int got = -1;
    if (esp_http_client_open(c, 0) == ESP_OK && esp_http_client_fetch_headers(c) >= 0 &&
        esp_http_client_get_status_code(c) == 206)
        got = esp_http_client_read_response(c, reinterpret_cast<char*>(out), len);
    esp_http_client_cleanup(c);
    return got;
}

bool mqtt_start(const char* uri, const char* device_id, const char* password) {
    snprintf(g_device, sizeof(g_device), "%s", device_id);
    esp_mqtt_client_config_t cfg = {};
    cfg.broker.address.uri = uri;  // mqtts://gateway:8883 with the hub's CA (docs/hub.md, TLS listener)
    cfg.session.protocol_ver = MQTT_PROTOCOL_V_5;
    cfg.credentials.client_id = device_id;
    cfg.credentials.username = device_id;
    cfg.credentials.authentication.password = password;
    cfg.network.reconnect_timeout_ms = 2000;
    g_mqtt = esp_mqtt_client_init(&cfg);
    esp_mqtt_client_register_event(g_mqtt, MQTT_EVENT_ANY, on_mqtt, nullptr);
    return esp_mqtt_client_start(g_mqtt) == ESP_OK;
}

bool mqtt_connected() { return xEventGroupGetBits(g_events) & kMqttUp; }

bool mqtt_refused() { return xEventGroupClearBits(g_events, kRefused) & kRefused; }

bool mqtt_publish_qos1(const char* topic, const char* payload, size_t len) {
    if (!mqtt_connected()) return false;
    xEventGroupClearBits(g_events, kPubAck);
    g_waiting_msg_id = esp_mqtt_client_publish(g_mqtt, topic, payload, len, 1, 0);
    if (g_waiting_msg_id < 0) return false;
    return xEventGroupWaitBits(g_events, kPubAck, pdTRUE, pdFALSE, pdMS_TO_TICKS(5000)) & kPubAck;
}

bool mqtt_respond(const Incoming& request, int status, const char* body) {
    if (!request.response_topic[0]) return false;
    char code[8];
    snprintf(code, sizeof(code), "%d", status);
    esp_mqtt5_user_property_item_t item = {"status", code};
    esp_mqtt5_publish_property_config_t props = {};
    props.correlation_data = reinterpret_cast<const char*>(request.correlation);
    props.correlation_data_len = request.correlation_len;
    esp_mqtt5_client_set_user_property(&props.user_property, &item, 1);
    esp_mqtt5_client_set_publish_property(g_mqtt, &props);
    const int id = esp_mqtt_client_publish(g_mqtt, request.response_topic, body, 0, 1, 0);
    esp_mqtt5_client_delete_user_property(props.user_property);
    return id >= 0;
}

bool mqtt_next_incoming(Incoming* out) { return xQueueReceive(g_incoming, out, 0) == pdTRUE; }

}  // namespace board
