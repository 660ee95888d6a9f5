/* Declarations for KissFFT's allocator hooks in the rv32 image (see main.cpp). */
#pragma once
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif
void* node_no_malloc(size_t size);
void node_no_free(void* p);
#ifdef __cplusplus
}
#endif
