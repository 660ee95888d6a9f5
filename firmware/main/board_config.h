// ESP32-C3 sensor node: pins, rates and budgets (firmware/README.md has the wiring table).
#pragma once

#include "driver/gpio.h"
#include "esp_adc/adc_continuous.h"

namespace board {

// Sensors: current (CT clamp + burden, biased to mid-rail), vibration (analog MEMS accelerometer)
// and temperature (NTC divider) on ADC1; sound from an I2S MEMS microphone.
constexpr adc_channel_t kAdcCurrent = ADC_CHANNEL_0;      // GPIO0
constexpr adc_channel_t kAdcVibration = ADC_CHANNEL_1;    // GPIO1
constexpr adc_channel_t kAdcTemperature = ADC_CHANNEL_2;  // GPIO2
constexpr gpio_num_t kI2sBclk = GPIO_NUM_4;
constexpr gpio_num_t kI2sWs = GPIO_NUM_5;
constexpr gpio_num_t kI2sData = GPIO_NUM_6;
// The valve's servo on LEDC (50 Hz, 14-bit duty: node::ServoSettings).
constexpr gpio_num_t kServo = GPIO_NUM_7;
constexpr gpio_num_t kStatusLed = GPIO_NUM_8;  // on-board LED: blinks while not activated

constexpr uint32_t kSampleRateHz = 8000;  // every channel, as the gateway's motor-sensor
constexpr size_t kArenaBytes = 16 * 1024;  // TFLM tensor arena (the motor model needs ~3.3 KB)
constexpr size_t kOtaChunk = 4096;

// Calibration: ADC millivolts -> engineering units.
constexpr float kCurrentAmpsPerMv = 0.03f;  // 30 A : 1 V CT
constexpr float kVibrationGPerMv = 0.0025f;  // 400 mV/g accelerometer
constexpr float kSoundPaPerCount = 1.0f / 8388608.0f * 3.16f;  // 24-bit I2S, -26 dBFS at 94 dB SPL

}  // namespace board
