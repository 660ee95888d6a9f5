// Test doubles for the core's seams (pure-logic unit tests) and small helpers.
#pragma once

#include <string.h>

#include <string>
#include <vector>

#include "kiss_real_fft.hpp"
#include "node/model.hpp"
#include "node/ota.hpp"

namespace testing_node {

/// Flash in memory.
class MemoryStore final : public node::ModelStore {
public:
    std::vector<uint8_t> slots[2];
    node::ModelMeta meta;
    bool has_meta = false;
    bool erase(int slot) override {
        slots[slot].clear();
        return true;
    }
    bool write(int slot, size_t offset, const uint8_t* data, size_t len) override {
        if (slots[slot].size() < offset + len) slots[slot].resize(offset + len);
        memcpy(slots[slot].data() + offset, data, len);
        return true;
    }
    const uint8_t* map(int slot, size_t size) override {
        return slots[slot].size() >= size ? slots[slot].data() : nullptr;
    }
    bool load_meta(node::ModelMeta* m) override {
        if (has_meta) *m = meta;
        return has_meta;
    }
    bool save_meta(const node::ModelMeta& m) override {
        meta = m;
        has_meta = true;
        return true;
    }
};

/// A runtime that "loads" byte strings starting with "MODEL" and scores with a settable raw value.
class ScriptedRuntime final : public node::Inference {
public:
    int8_t raw = -128;
    int loads = 0;
    std::string loaded;
    bool load(const uint8_t* model, size_t size, node::ModelIo* io) override {
        ++loads;
        std::string s(reinterpret_cast<const char*>(model), size);
        if (s.rfind("MODEL", 0) != 0) return false;
        loaded = s;
        io->inputs = s.find("wide") != std::string::npos ? 8 : node::kModelInputs;
        io->outputs = 1;
        io->input = {0.0784313753247261f, -1};
        io->output = {0.00390625f, -128};
        io->arena_used = 2048;
        return true;
    }
    bool invoke(const int8_t*, int8_t* output) override {
        *output = raw;
        return true;
    }
};

std::string sha256_hex(const std::string& data);

}  // namespace testing_node
