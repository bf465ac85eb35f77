// The header included first, before any standard header, in C++: it must declare nothing of
// the C library itself (it once declared malloc and free, clashing with <cstdlib>). Compiled
// with g++ -Wall -Wextra -Werror by tests/c_api.rs, then run.
#include "strata.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

int main() {
    strata_store *store = nullptr;
    if (strata_open_in_memory(nullptr, &store) != STRATA_OK) return 1;
    const char data[] = "hello";
    strata_new_event event{};
    event.event_type = "greeted";
    event.data = reinterpret_cast<const uint8_t *>(data);
    event.data_len = std::strlen(data);
    strata_append_result result{};
    if (strata_append(store, "s", STRATA_EXPECT_NO_STREAM, 0, &event, 1, &result) != STRATA_OK)
        return 2;
    char *text = nullptr;
    if (strata_metrics_text(store, &text) != STRATA_OK) return 3;
    // The library's buffers go back through strata_free; the caller's own through std::free.
    void *mine = std::malloc(16);
    std::free(mine);
    strata_free(text);
    if (strata_store_free(store) != STRATA_OK) return 4;
    std::printf("c++ ok: position %llu\n", static_cast<unsigned long long>(result.last_position));
    return 0;
}
