// Host board layer: model slots and their record as files in a directory ("flash").
#pragma once

#include "node/ota.hpp"

namespace host {

class FileModelStore final : public node::ModelStore {
public:
    /// `dir` must exist; files slot0.bin, slot1.bin and slots.txt live there.
    bool open(const char* dir);
    bool erase(int slot) override;
    bool write(int slot, size_t offset, const uint8_t* data, size_t len) override;
    const uint8_t* map(int slot, size_t size) override;
    bool load_meta(node::ModelMeta* meta) override;
    bool save_meta(const node::ModelMeta& meta) override;

private:
    void path(char* out, size_t cap, const char* name) const;
    char dir_[512] = "";
    uint8_t mapped_[2][node::kMaxModelBytes];
};

}  // namespace host
