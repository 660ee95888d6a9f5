// node::RealFft on esp-dsp: a complex radix-2 FFT of N/2 points packed from the real input, then
// esp-dsp's split into the N/2 + 1 bins of the real transform (dsps_cplx2real).
#pragma once

#include "node/config.hpp"
#include "node/fft.hpp"

namespace board {

class EspDspFft final : public node::RealFft {
public:
    bool init();
    void forward(const float* in, node::Complex* out) override;
    int size() const override { return node::kWindowSize; }

private:
    alignas(16) float work_[node::kWindowSize];
};

}  // namespace board
