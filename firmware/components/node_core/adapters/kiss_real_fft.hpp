// RealFft on KissFFT's real transform (kiss_fftr), its state in a static buffer: no heap.
#pragma once

#include <kiss_fftr.h>

#include "node/config.hpp"
#include "node/fft.hpp"

namespace node {

class KissRealFft final : public RealFft {
public:
    /// False when the buffer is too small for `n` points (then `forward` must not be called).
    bool init(int n = kWindowSize);
    void forward(const float* in, Complex* out) override;
    int size() const override { return n_; }

private:
    alignas(16) unsigned char mem_[16 * 1024];
    kiss_fftr_cfg cfg_ = nullptr;
    int n_ = 0;
};

}  // namespace node
