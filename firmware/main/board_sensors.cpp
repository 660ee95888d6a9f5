#include <math.h>
#include <string.h>

#include "board.hpp"
#include "board_config.h"
#include "driver/i2s_std.h"
#include "esp_adc/adc_cali.h"
#include "esp_adc/adc_cali_scheme.h"
#include "esp_adc/adc_continuous.h"

namespace board {

namespace {
adc_continuous_handle_t g_adc;
adc_cali_handle_t g_cali;
i2s_chan_handle_t g_mic;
constexpr int kAdcChannels = 3;
uint8_t g_adc_buf[node::kWindowSize * kAdcChannels * SOC_ADC_DIGI_RESULT_BYTES];
int32_t g_mic_buf[node::kWindowSize];
}  // namespace

bool sensors_init() {
    adc_continuous_handle_cfg_t handle = {};
    handle.max_store_buf_size = sizeof(g_adc_buf) * 2;
    handle.conv_frame_size = sizeof(g_adc_buf);
    if (adc_continuous_new_handle(&handle, &g_adc) != ESP_OK) return false;
    adc_digi_pattern_config_t pattern[kAdcChannels] = {};
    const adc_channel_t channels[kAdcChannels] = {kAdcCurrent, kAdcVibration, kAdcTemperature};
    for (int i = 0; i < kAdcChannels; ++i) {
        pattern[i].atten = ADC_ATTEN_DB_12;
        pattern[i].channel = channels[i];
        pattern[i].unit = ADC_UNIT_1;
        pattern[i].bit_width = SOC_ADC_DIGI_MAX_BITWIDTH;
    }
    adc_continuous_config_t cfg = {};
    cfg.pattern_num = kAdcChannels;
    cfg.adc_pattern = pattern;
    cfg.sample_freq_hz = kSampleRateHz * kAdcChannels;  // round-robin: 8 kHz per channel
    cfg.conv_mode = ADC_CONV_SINGLE_UNIT_1;
    cfg.format = ADC_DIGI_OUTPUT_FORMAT_TYPE2;
    if (adc_continuous_config(g_adc, &cfg) != ESP_OK) return false;
    adc_cali_curve_fitting_config_t cali = {};
    cali.unit_id = ADC_UNIT_1;
    cali.atten = ADC_ATTEN_DB_12;
    cali.bitwidth = ADC_BITWIDTH_DEFAULT;
    if (adc_cali_create_scheme_curve_fitting(&cali, &g_cali) != ESP_OK) return false;

    i2s_chan_config_t chan = I2S_CHANNEL_DEFAULT_CONFIG(I2S_NUM_0, I2S_ROLE_MASTER);
    if (i2s_new_channel(&chan, nullptr, &g_mic) != ESP_OK) return false;
    i2s_std_config_t std = {};
    std.clk_cfg = I2S_STD_CLK_DEFAULT_CONFIG(kSampleRateHz);
    std.slot_cfg = I2S_STD_MSB_SLOT_DEFAULT_CONFIG(I2S_DATA_BIT_WIDTH_32BIT, I2S_SLOT_MODE_MONO);
    std.gpio_cfg.bclk = kI2sBclk;
    std.gpio_cfg.ws = kI2sWs;
    std.gpio_cfg.din = kI2sData;
    std.gpio_cfg.dout = I2S_GPIO_UNUSED;
    std.gpio_cfg.mclk = I2S_GPIO_UNUSED;
    if (i2s_channel_init_std_mode(g_mic, &std) != ESP_OK) return false;
    return adc_continuous_start(g_adc) == ESP_OK && i2s_channel_enable(g_mic) == ESP_OK;
}

bool sensors_read_window(float* const out[node::kChannels]) {
    // One window of each channel, sampled over the same 128 ms.
    int filled[kAdcChannels] = {0, 0, 0};
    while (filled[0] < node::kWindowSize || filled[1] < node::kWindowSize || filled[2] < node::kWindowSize) {
        uint32_t got = 0;
        if (adc_continuous_read(g_adc, g_adc_buf, sizeof(g_adc_buf), &got, 1000) != ESP_OK) return false;
        for (uint32_t i = 0; i + SOC_ADC_DIGI_RESULT_BYTES <= got; i += SOC_ADC_DIGI_RESULT_BYTES) {
            const adc_digi_output_data_t* d = reinterpret_cast<const adc_digi_output_data_t*>(&g_adc_buf[i]);
            int mv = 0;
            adc_cali_raw_to_voltage(g_cali, d->type2.data, &mv);
            const int ch = d->type2.channel == kAdcCurrent ? 0 : d->type2.channel == kAdcVibration ? 1 : 2;
            if (filled[ch] >= node::kWindowSize) continue;
            float v;
            if (ch == 0) {
                v = (mv - 1650) * kCurrentAmpsPerMv;
                out[node::kCurrent][filled[0]++] = v;
            } else if (ch == 1) {
                v = (mv - 1650) * kVibrationGPerMv;
                out[node::kVibration][filled[1]++] = v;
            } else {
                // NTC (10k, B=3950) in a divider to 3.3 V: the Beta equation.
                const float r = 10000.0f * mv / (3300.0f - mv + 1e-3f);
                v = 1.0f / (1.0f / 298.15f + logf(r / 10000.0f) / 3950.0f) - 273.15f;
                out[node::kTemperature][filled[2]++] = v;
            }
        }
    }
    size_t bytes = 0;
    if (i2s_channel_read(g_mic, g_mic_buf, sizeof(g_mic_buf), &bytes, 1000) != ESP_OK) return false;
    for (int i = 0; i < node::kWindowSize; ++i) out[node::kSound][i] = (g_mic_buf[i] >> 8) * kSoundPaPerCount;
    return true;
}

}  // namespace board
