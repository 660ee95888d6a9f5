#include <string.h>

#include "board.hpp"
#include "esp_partition.h"
#include "nvs.h"
#include "nvs_flash.h"

namespace board {

namespace {
const esp_partition_t* g_slot[2];
const void* g_mapped[2];
esp_partition_mmap_handle_t g_map_handle[2];
nvs_handle_t g_nvs;
}  // namespace

bool FlashModelStore::init() {
    g_slot[0] = esp_partition_find_first(ESP_PARTITION_TYPE_DATA, static_cast<esp_partition_subtype_t>(0x40), "model_a");
    g_slot[1] = esp_partition_find_first(ESP_PARTITION_TYPE_DATA, static_cast<esp_partition_subtype_t>(0x40), "model_b");
    return g_slot[0] && g_slot[1] && nvs_open("node", NVS_READWRITE, &g_nvs) == ESP_OK;
}

bool FlashModelStore::erase(int slot) {
    if (g_mapped[slot]) {
        esp_partition_munmap(g_map_handle[slot]);
        g_mapped[slot] = nullptr;
    }
    return esp_partition_erase_range(g_slot[slot], 0, g_slot[slot]->size) == ESP_OK;
}

bool FlashModelStore::write(int slot, size_t offset, const uint8_t* data, size_t len) {
    return esp_partition_write(g_slot[slot], offset, data, len) == ESP_OK;
}

const uint8_t* FlashModelStore::map(int slot, size_t size) {
    if (size > g_slot[slot]->size) return nullptr;
    if (g_mapped[slot]) esp_partition_munmap(g_map_handle[slot]);
    if (esp_partition_mmap(g_slot[slot], 0, g_slot[slot]->size, ESP_PARTITION_MMAP_DATA, &g_mapped[slot],
                           &g_map_handle[slot]) != ESP_OK)
        return nullptr;
    return static_cast<const uint8_t*>(g_mapped[slot]);
}

bool FlashModelStore::load_meta(node::ModelMeta* meta) {
    size_t len = sizeof(*meta);
    return nvs_get_blob(g_nvs, "slots", meta, &len) == ESP_OK && len == sizeof(*meta);
}

bool FlashModelStore::save_meta(const node::ModelMeta& meta) {
    return nvs_set_blob(g_nvs, "slots", &meta, sizeof(meta)) == ESP_OK && nvs_commit(g_nvs) == ESP_OK;
}

bool nvs_get(const char* key, char* out, size_t cap) {
    size_t len = cap;
    return nvs_get_str(g_nvs, key, out, &len) == ESP_OK;
}

bool nvs_set(const char* key, const char* value) {
    const esp_err_t err = value[0] ? nvs_set_str(g_nvs, key, value) : nvs_erase_key(g_nvs, key);
    return (err == ESP_OK || err == ESP_ERR_NVS_NOT_FOUND) && nvs_commit(g_nvs) == ESP_OK;
}

uint32_t next_boot_count() {
    uint32_t boot = 0;
    nvs_get_u32(g_nvs, "boot", &boot);
    nvs_set_u32(g_nvs, "boot", ++boot);
    nvs_commit(g_nvs);
    return boot;
}

}  // namespace board
