#include "esp_dsp_fft.hpp"

#include <string.h>

#include "dsps_fft2r.h"

namespace board {

bool EspDspFft::init() {
    // Twiddle tables in esp-dsp's static buffer (CONFIG_DSP_MAX_FFT_SIZE >= 1024): no heap.
    return dsps_fft2r_init_fc32(nullptr, CONFIG_DSP_MAX_FFT_SIZE) == ESP_OK;
}

void EspDspFft::forward(const float* in, node::Complex* out) {
    const int half = node::kWindowSize / 2;
    memcpy(work_, in, sizeof(work_));  // the N reals read as N/2 complex values (re = even, im = odd)
    dsps_fft2r_fc32(work_, half);
    dsps_bit_rev2r_fc32(work_, half);
    dsps_cplx2real_fc32(work_, half);  // -> bins 0..N/2-1 of the real FFT, Nyquist packed in bin 0's im
    out[0] = {work_[0], 0.0f};
    out[half] = {work_[1], 0.0f};
    for (int k = 1; k < half; ++k) out[k] = {work_[2 * k], work_[2 * k + 1]};
}

}  // namespace board
