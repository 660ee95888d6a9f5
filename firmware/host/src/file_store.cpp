#include "file_store.hpp"

#include <stdio.h>
#include <string.h>

namespace host {

bool FileModelStore::open(const char* dir) { return node::copy_string(dir_, sizeof(dir_), dir); }

void FileModelStore::path(char* out, size_t cap, const char* name) const { snprintf(out, cap, "%s/%s", dir_, name); }

bool FileModelStore::erase(int slot) {
    char p[600];
    snprintf(p, sizeof(p), "%s/slot%d.bin", dir_, slot);
    FILE* f = fopen(p, "wb");  // an erased partition: empty
    return f && fclose(f) == 0;
}

bool FileModelStore::write(int slot, size_t offset, const uint8_t* data, size_t len) {
    char p[600];
    snprintf(p, sizeof(p), "%s/slot%d.bin", dir_, slot);
    FILE* f = fopen(p, "r+b");
    if (!f) return false;
    const bool ok = fseek(f, static_cast<long>(offset), SEEK_SET) == 0 && fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

const uint8_t* FileModelStore::map(int slot, size_t size) {
    char p[600];
    snprintf(p, sizeof(p), "%s/slot%d.bin", dir_, slot);
    if (slot < 0 || slot > 1 || size > sizeof(mapped_[0])) return nullptr;
    FILE* f = fopen(p, "rb");
    if (!f) return nullptr;
    const size_t got = fread(mapped_[slot], 1, size, f);
    fclose(f);
    return got == size ? mapped_[slot] : nullptr;
}

bool FileModelStore::load_meta(node::ModelMeta* meta) {
    char p[600];
    path(p, sizeof(p), "slots.txt");
    FILE* f = fopen(p, "r");
    if (!f) return false;
    node::ModelMeta m;
    bool ok = fscanf(f, "active %d\n", &m.active) == 1;
    for (int i = 0; ok && i < 2; ++i) {
        int valid = 0;
        unsigned size = 0;
        ok = fscanf(f, "slot %d %u %31s %64s\n", &valid, &size, m.slots[i].version, m.slots[i].sha256) == 4;
        m.slots[i].valid = valid != 0;
        m.slots[i].size = size;
        if (strcmp(m.slots[i].version, "-") == 0) m.slots[i].version[0] = 0;
        if (strcmp(m.slots[i].sha256, "-") == 0) m.slots[i].sha256[0] = 0;
    }
    fclose(f);
    if (ok) *meta = m;
    return ok;
}

bool FileModelStore::save_meta(const node::ModelMeta& m) {
    char p[600], tmp[610];
    path(p, sizeof(p), "slots.txt");
    snprintf(tmp, sizeof(tmp), "%s.tmp", p);
    FILE* f = fopen(tmp, "w");
    if (!f) return false;
    fprintf(f, "active %d\n", m.active);
    for (const auto& s : m.slots)
        fprintf(f, "slot %d %u %s %s\n", s.valid ? 1 : 0, s.size, s.version[0] ? s.version : "-",
                s.sha256[0] ? s.sha256 : "-");
    const bool ok = fclose(f) == 0;
    return ok && rename(tmp, p) == 0;  // atomic, like an NVS commit
}

}  // namespace host
