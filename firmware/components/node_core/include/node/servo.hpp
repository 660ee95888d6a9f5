// The valve's hobby servo on LEDC PWM: angle -> pulse width -> duty, and who decides the position.
#pragma once

#include <stdint.h>

namespace node {

struct ServoSettings {
    uint32_t frequency_hz = 50;  ///< 20 ms frame
    uint32_t min_pulse_us = 500;  ///< at 0 degrees
    uint32_t max_pulse_us = 2500;  ///< at 180 degrees
    uint8_t resolution_bits = 14;  ///< LEDC duty resolution
    float closed_deg = 0;
    float open_deg = 90;
};

/// LEDC duty (0 .. 2^bits - 1) for `angle_deg`, clamped to [0, 180].
uint32_t servo_duty(const ServoSettings& s, float angle_deg);
/// Pulse width in microseconds for `angle_deg`, clamped to [0, 180].
uint32_t servo_pulse_us(const ServoSettings& s, float angle_deg);

enum class ValveMode : uint8_t { kAuto, kForceOpen, kForceClosed };

/// Valve position: in auto mode it follows the fault decision; a gateway command can force it.
class Valve {
public:
    /// The position for the current fault state; true when it changed.
    bool update(bool fault);
    bool set_mode(ValveMode mode, bool fault) {
        mode_ = mode;
        return update(fault);
    }
    bool open() const { return open_; }
    ValveMode mode() const { return mode_; }
    uint32_t duty() const { return servo_duty(settings, open_ ? settings.open_deg : settings.closed_deg); }
    ServoSettings settings;

private:
    ValveMode mode_ = ValveMode::kAuto;
    bool open_ = false;
};

const char* valve_mode_name(ValveMode mode);

}  // namespace node
