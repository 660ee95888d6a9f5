#include "tflm_inference.hpp"

#include <new>

#include "board_config.h"
#include "esp_log.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace board {

namespace {
const char* TAG = "tflm";
alignas(16) uint8_t g_arena[kArenaBytes];
// The interpreter lives in static storage and is rebuilt in place for each model (no heap).
alignas(tflite::MicroInterpreter) uint8_t g_interpreter_mem[sizeof(tflite::MicroInterpreter)];
tflite::MicroInterpreter* g_interpreter = nullptr;
tflite::MicroMutableOpResolver<2> g_resolver;
bool g_resolver_ready = false;
}  // namespace

bool TflmInference::load(const uint8_t* model_bytes, size_t size, node::ModelIo* io) {
    if (!g_resolver_ready) {
        g_resolver.AddFullyConnected();
        g_resolver.AddLogistic();
        g_resolver_ready = true;
    }
    flatbuffers::Verifier verifier(model_bytes, size);
    if (!tflite::VerifyModelBuffer(verifier)) {
        ESP_LOGE(TAG, "not a TFLite flatbuffer (%u bytes)", unsigned(size));
        return false;
    }
    const tflite::Model* model = tflite::GetModel(model_bytes);
    if (model->version() != TFLITE_SCHEMA_VERSION) return false;
    if (g_interpreter) g_interpreter->~MicroInterpreter();
    g_interpreter = new (g_interpreter_mem) tflite::MicroInterpreter(model, g_resolver, g_arena, sizeof(g_arena));
    if (g_interpreter->AllocateTensors() != kTfLiteOk) {
        ESP_LOGE(TAG, "AllocateTensors failed: the model needs more than %u arena bytes or an unregistered op",
                 unsigned(sizeof(g_arena)));
        g_interpreter->~MicroInterpreter();
        g_interpreter = nullptr;
        return false;
    }
    const TfLiteTensor* in = g_interpreter->input(0);
    const TfLiteTensor* out = g_interpreter->output(0);
    if (in->type != kTfLiteInt8 || out->type != kTfLiteInt8) return false;
    io->inputs = static_cast<int>(in->bytes);
    io->outputs = static_cast<int>(out->bytes);
    io->input = {in->params.scale, in->params.zero_point};
    io->output = {out->params.scale, out->params.zero_point};
    io->arena_used = g_interpreter->arena_used_bytes();
    ESP_LOGI(TAG, "model loaded: arena %u of %u bytes", unsigned(io->arena_used), unsigned(sizeof(g_arena)));
    return true;
}

bool TflmInference::invoke(const int8_t* input, int8_t* output) {
    if (!g_interpreter) return false;
    TfLiteTensor* in = g_interpreter->input(0);
    for (size_t i = 0; i < in->bytes; ++i) in->data.int8[i] = input[i];
    if (g_interpreter->Invoke() != kTfLiteOk) return false;
    *output = g_interpreter->output(0)->data.int8[0];
    return true;
}

}  // namespace board
