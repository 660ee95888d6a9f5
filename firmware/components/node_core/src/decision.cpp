#include "node/decision.hpp"

namespace node {

bool Decision::update(float score) {
    // NaN counts as neither above nor below: it breaks a streak and changes nothing.
    const bool towards = fault_ ? score < settings.release : score > settings.threshold;
    streak_ = towards ? streak_ + 1 : 0;
    const int needed = fault_ ? settings.clear_windows : settings.trip_windows;
    if (streak_ >= needed) {
        fault_ = !fault_;
        streak_ = 0;
        return true;
    }
    return false;
}

}  // namespace node
