#include "node/servo.hpp"

namespace node {

uint32_t servo_pulse_us(const ServoSettings& s, float angle_deg) {
    float a = angle_deg < 0 ? 0 : (angle_deg > 180 ? 180 : angle_deg);
    if (!(a == a)) a = 0;  // NaN
    const float span = static_cast<float>(s.max_pulse_us - s.min_pulse_us);
    return s.min_pulse_us + static_cast<uint32_t>(span * a / 180.0f + 0.5f);
}

uint32_t servo_duty(const ServoSettings& s, float angle_deg) {
    const uint64_t period_us = 1000000ull / s.frequency_hz;
    const uint64_t full = (1ull << s.resolution_bits) - 1;
    const uint64_t duty = (static_cast<uint64_t>(servo_pulse_us(s, angle_deg)) * (full + 1) + period_us / 2) / period_us;
    return static_cast<uint32_t>(duty > full ? full : duty);
}

bool Valve::update(bool fault) {
    const bool want = mode_ == ValveMode::kForceOpen || (mode_ == ValveMode::kAuto && fault);
    const bool changed = want != open_;
    open_ = want;
    return changed;
}

const char* valve_mode_name(ValveMode mode) {
    switch (mode) {
        case ValveMode::kForceOpen: return "open";
        case ValveMode::kForceClosed: return "closed";
        default: return "auto";
    }
}

}  // namespace node
