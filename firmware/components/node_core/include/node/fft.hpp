// The real-FFT seam: KissFFT on the host and in the rv32 image (adapters/kiss_real_fft), esp-dsp or
// KissFFT on the board. The core never computes a transform itself.
#pragma once

namespace node {

struct Complex {
    float re;
    float im;
};

class RealFft {
public:
    /// Forward transform of `size()` real samples into `size() / 2 + 1` bins.
    virtual void forward(const float* in, Complex* out) = 0;
    virtual int size() const = 0;

protected:
    ~RealFft() = default;  // never deleted through the interface (no heap)
};

}  // namespace node
