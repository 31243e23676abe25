/* A stand-in for miniaudio.h, used only when building Ollama from its Go module.
 *
 * Go module archives drop every `vendor/` directory, so llama.cpp's vendored
 * single-header libraries are missing from github.com/ollama/ollama's module.
 * nlohmann/json and stb_image come from Debian (nlohmann-json3-dev, libstb-dev);
 * miniaudio is not packaged, and Ollama uses it only to decode audio inputs of
 * multimodal models. This stand-in makes audio decoding fail cleanly ("not an
 * audio file"), which is all a CPU test build serving a text model needs.
 */
#ifndef MODELOPS_MINIAUDIO_SHIM_H
#define MODELOPS_MINIAUDIO_SHIM_H
#include <stddef.h>
#include <stdint.h>

typedef int ma_result;
typedef uint64_t ma_uint64;
typedef int ma_format;
#define MA_SUCCESS 0
#define MA_ERROR (-1)
#define ma_format_f32 5
#define ma_encoding_format_wav 1

typedef struct { ma_format format; uint32_t channels; uint32_t sampleRate; } ma_decoder_config;
typedef struct { int unused; } ma_decoder;
typedef struct { int unused; } ma_encoder_config;
typedef struct { int unused; } ma_encoder;

static inline ma_decoder_config ma_decoder_config_init(ma_format f, uint32_t ch, uint32_t rate) {
    ma_decoder_config c; c.format = f; c.channels = ch; c.sampleRate = rate; return c;
}
static inline ma_result ma_decoder_init_memory(const void *d, size_t n, const ma_decoder_config *c, ma_decoder *dec) {
    (void)d; (void)n; (void)c; (void)dec; return MA_ERROR;
}
static inline ma_result ma_decoder_get_length_in_pcm_frames(ma_decoder *d, ma_uint64 *n) { (void)d; *n = 0; return MA_ERROR; }
static inline ma_result ma_decoder_read_pcm_frames(ma_decoder *d, void *o, ma_uint64 n, ma_uint64 *r) {
    (void)d; (void)o; (void)n; *r = 0; return MA_ERROR;
}
static inline ma_result ma_decoder_uninit(ma_decoder *d) { (void)d; return MA_SUCCESS; }
#endif
