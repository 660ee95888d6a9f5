#include "kiss_real_fft.hpp"

namespace node {

static_assert(sizeof(kiss_fft_scalar) == sizeof(float), "KissFFT must be built for float");
static_assert(sizeof(kiss_fft_cpx) == sizeof(Complex), "Complex must match kiss_fft_cpx");

bool KissRealFft::init(int n) {
    size_t len = sizeof(mem_);
    cfg_ = kiss_fftr_alloc(n, 0, mem_, &len);  // uses our buffer; never mallocs
    n_ = cfg_ ? n : 0;
    return cfg_ != nullptr;
}

void KissRealFft::forward(const float* in, Complex* out) {
    kiss_fftr(cfg_, in, reinterpret_cast<kiss_fft_cpx*>(out));
}

}  // namespace node
