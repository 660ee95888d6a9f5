// node::Inference on TFLM (espressif/esp-tflite-micro). Only the ops the shipped model uses are
// registered (tests/integration/test_firmware_node.py checks the model needs no other).
#pragma once

#include "node/model.hpp"

namespace board {

class TflmInference final : public node::Inference {
public:
    bool load(const uint8_t* model, size_t size, node::ModelIo* io) override;
    bool invoke(const int8_t* input, int8_t* output) override;
};

}  // namespace board
