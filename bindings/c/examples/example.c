/* Append two events to a stream and read them back. Build:
 *   cc example.c -I bindings/c/include -L target/release -lstrata -o example */
#include <stdio.h>
#include <string.h>
#include "strata.h"

int main(void) {
    strata_store *store = NULL;
    strata_options options;
    strata_options_init(&options);
    options.durability = STRATA_FAST;
    if (strata_open_in_memory(&options, &store) != STRATA_OK) {
        fprintf(stderr, "open: %s\n", strata_errmsg());
        return 1;
    }

    const char *payload = "{\"amount_cents\":1999}";
    strata_new_event events[2] = {
        {.event_type = "order_created", .data = (const uint8_t *)payload, .data_len = strlen(payload)},
        {.event_type = "order_paid"},
    };
    strata_append_result result;
    strata_status status =
        strata_append(store, "order-1", STRATA_EXPECT_NO_STREAM, 0, events, 2, &result);
    if (status != STRATA_OK) {
        fprintf(stderr, "append: %s: %s\n", strata_status_name(status), strata_errmsg());
        strata_store_free(store);
        return 1;
    }
    printf("appended positions %llu..%llu, version %llu\n",
           (unsigned long long)result.first_position, (unsigned long long)result.last_position,
           (unsigned long long)result.last_version);

    /* A second writer with a stale expectation gets a conflict and the actual version. */
    status = strata_append(store, "order-1", STRATA_EXPECT_EXACT, 1, events, 1, NULL);
    if (status == STRATA_CONFLICT)
        printf("conflict: actual version %llu\n",
               (unsigned long long)strata_last_actual_version());

    strata_cursor *cursor = NULL;
    strata_event event;
    strata_read_stream(store, "order-1", 0, STRATA_FORWARDS, 0, &cursor);
    while ((status = strata_cursor_next(cursor, &event)) == STRATA_OK)
        printf("v%llu %.*s (%zu bytes)\n", (unsigned long long)event.version,
               (int)event.event_type_len, event.event_type, event.data_len);
    strata_cursor_free(cursor);
    strata_store_free(store);
    return status == STRATA_DONE ? 0 : 1;
}
