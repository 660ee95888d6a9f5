// Fault decision with hysteresis: a fault after `trip_windows` consecutive scores above `threshold`,
// cleared after `clear_windows` consecutive scores below `release`.
#pragma once

#include <stdint.h>

namespace node {

struct DecisionSettings {
    float threshold = 0.8f;  ///< the anomaly-detector's threshold
    float release = 0.5f;    ///< hysteresis: the score must fall below this to count towards clearing
    int trip_windows = 3;    ///< K
    int clear_windows = 5;
};

class Decision {
public:
    /// Feed one window's score; true when the fault state changed.
    bool update(float score);
    bool fault() const { return fault_; }
    int streak() const { return streak_; }
    DecisionSettings settings;

private:
    bool fault_ = false;
    int streak_ = 0;
};

}  // namespace node
