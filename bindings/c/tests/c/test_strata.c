/* The C test of libstrata: every function, with its error paths.
 *
 *   test_strata core DIR          everything but projections (run under valgrind)
 *   test_strata projections WASM  projections, with the event-counter plugin at WASM
 *
 * Compiled and run by bindings/c/tests/c_api.rs. Exits 0 when every check passed. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strata.h"

static int failures = 0;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__,        \
                    __LINE__, #cond, strata_errmsg());                                     \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

#define EXPECT(call, expected)                                                             \
    do {                                                                                   \
        strata_status got_ = (call);                                                       \
        if (got_ != (expected)) {                                                          \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s (last error: %s)\n",       \
                    __FILE__, __LINE__, #call, strata_status_name(got_), #expected,        \
                    strata_errmsg());                                                      \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

#define ERRMSG_HAS(text) CHECK(strstr(strata_errmsg(), (text)) != NULL)

static const char BAD_UTF8[] = {'a', (char)0xff, 'b', 0};

static strata_store *open_memory(void) {
    strata_options options;
    strata_store *store = NULL;
    EXPECT(strata_options_init(&options), STRATA_OK);
    options.durability = STRATA_FAST;
    EXPECT(strata_open_in_memory(&options, &store), STRATA_OK);
    CHECK(store != NULL);
    return store;
}

static strata_new_event event_of(const char *type, const char *data) {
    strata_new_event e;
    memset(&e, 0, sizeof e);
    e.event_type = type;
    e.data = (const uint8_t *)data;
    e.data_len = data ? strlen(data) : 0;
    return e;
}

static void test_library(void) {
    CHECK(strcmp(strata_status_name(STRATA_OK), "STRATA_OK") == 0);
    CHECK(strcmp(strata_status_name(STRATA_CONFLICT), "STRATA_CONFLICT") == 0);
    CHECK(strcmp(strata_status_name(STRATA_INTERNAL), "STRATA_INTERNAL") == 0);
    CHECK(strcmp(strata_status_name(-1), "STRATA_UNKNOWN") == 0);
    CHECK(strcmp(strata_status_name(1000), "STRATA_UNKNOWN") == 0);
    CHECK(strlen(strata_version()) > 0);
    CHECK(strata_errmsg() != NULL);
    strata_free(NULL);
    EXPECT(strata_store_free(NULL), STRATA_OK);
    EXPECT(strata_cursor_free(NULL), STRATA_OK);
    EXPECT(strata_subscription_free(NULL), STRATA_OK);
}

static void test_open(const char *dir) {
    char path[4096], junk[4096];
    strata_options options;
    strata_store *store = (strata_store *)0x1;

    EXPECT(strata_options_init(NULL), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_options_init(&options), STRATA_OK);
    CHECK(options.durability == STRATA_DURABLE);
    CHECK(options.read_connections == 4);

    snprintf(path, sizeof path, "%s/store.db", dir);
    EXPECT(strata_open(NULL, &options, &store), STRATA_INVALID_ARGUMENT);
    CHECK(store == NULL);
    EXPECT(strata_open(path, &options, NULL), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_open(BAD_UTF8, &options, &store), STRATA_INVALID_ARGUMENT);
    ERRMSG_HAS("UTF-8");
    CHECK(store == NULL);

    options.durability = 7;
    EXPECT(strata_open(path, &options, &store), STRATA_INVALID_ARGUMENT);
    ERRMSG_HAS("durability");
    strata_options_init(&options);
    options.bucket_width = 99;
    EXPECT(strata_open(path, &options, &store), STRATA_INVALID_ARGUMENT);
    strata_options_init(&options);
    options.read_connections = 0;
    EXPECT(strata_open(path, &options, &store), STRATA_INVALID_ARGUMENT);
    ERRMSG_HAS("read_connections");

    /* A real file, created with day buckets, then reopened. */
    strata_options_init(&options);
    options.bucket_width = STRATA_BUCKET_DAY;
    options.durability = STRATA_FAST;
    EXPECT(strata_open(path, &options, &store), STRATA_OK);
    strata_new_event e = event_of("created", "x");
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, &e, 1, NULL), STRATA_OK);
    EXPECT(strata_store_free(store), STRATA_OK);

    options.bucket_width = STRATA_BUCKET_HOUR;
    EXPECT(strata_open(path, &options, &store), STRATA_INCOMPATIBLE);
    CHECK(store == NULL);
    EXPECT(strata_open(path, NULL, &store), STRATA_OK);
    uint64_t last = 99;
    EXPECT(strata_last_position(store, &last), STRATA_OK);
    CHECK(last == 1);
    EXPECT(strata_store_free(store), STRATA_OK);

    /* A file that is not a database. */
    snprintf(junk, sizeof junk, "%s/junk.db", dir);
    FILE *f = fopen(junk, "wb");
    CHECK(f != NULL);
    if (f) {
        for (int i = 0; i < 4096; i++) fputc('j', f);
        fclose(f);
    }
    EXPECT(strata_open(junk, NULL, &store), STRATA_CORRUPT);
    CHECK(store == NULL);
}

static void test_append(void) {
    strata_store *store = open_memory();
    uint8_t id[3][16] = {{0x01, 0x8f, 0, 0, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 1},
                         {0x01, 0x8f, 0, 0, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 2},
                         {0x01, 0x8f, 0, 0, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 3}};
    const char meta[] = "meta";
    strata_new_event events[3] = {event_of("created", "one"), event_of("paid", "two"),
                                  event_of("shipped", NULL)};
    for (int i = 0; i < 3; i++) events[i].event_id = id[i];
    events[1].metadata = (const uint8_t *)meta;
    events[1].metadata_len = 4;
    strata_append_result r;

    EXPECT(strata_append(store, "order-1", STRATA_EXPECT_NO_STREAM, 0, events, 3, &r), STRATA_OK);
    CHECK(r.first_position == 1 && r.last_position == 3 && r.last_version == 3);
    CHECK(r.already_stored == 0);

    /* Conflict: the actual version is reported, the result zeroed. */
    strata_new_event fresh = event_of("shipped", NULL);
    EXPECT(strata_append(store, "order-1", STRATA_EXPECT_NO_STREAM, 0, &fresh, 1, &r),
           STRATA_CONFLICT);
    CHECK(strata_last_actual_version() == 3);
    CHECK(r.last_version == 0 && r.first_position == 0);
    ERRMSG_HAS("order-1");
    EXPECT(strata_append(store, "order-1", STRATA_EXPECT_EXACT, 2, &fresh, 1, &r),
           STRATA_CONFLICT);
    CHECK(strata_last_actual_version() == 3);
    EXPECT(strata_append(store, "nothing", STRATA_EXPECT_STREAM_EXISTS, 0, &fresh, 1, &r),
           STRATA_CONFLICT);
    CHECK(strata_last_actual_version() == 0);
    EXPECT(strata_append(store, "order-1", STRATA_EXPECT_EXACT, 3, &fresh, 1, &r), STRATA_OK);
    CHECK(r.last_version == 4 && r.first_position == 4);
    EXPECT(strata_append(store, "order-1", STRATA_EXPECT_STREAM_EXISTS, 0, &fresh, 1, NULL),
           STRATA_OK);

    /* Idempotency: the same events again is a retry; the id elsewhere is a duplicate. */
    EXPECT(strata_append(store, "order-1", STRATA_EXPECT_NO_STREAM, 0, events, 3, &r), STRATA_OK);
    CHECK(r.already_stored == 1 && r.first_position == 1 && r.last_version == 3);
    EXPECT(strata_append(store, "order-2", STRATA_EXPECT_ANY, 0, events, 1, &r), STRATA_DUPLICATE_ID);
    CHECK(r.last_version == 0);
    ERRMSG_HAS("already stored");

    /* Invalid arguments. */
    EXPECT(strata_append(store, NULL, STRATA_EXPECT_ANY, 0, events, 1, &r), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_append(store, BAD_UTF8, STRATA_EXPECT_ANY, 0, events, 1, &r),
           STRATA_INVALID_ARGUMENT);
    EXPECT(strata_append(store, "", STRATA_EXPECT_ANY, 0, events, 1, &r), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_append(store, "s", 42, 0, events, 1, &r), STRATA_INVALID_ARGUMENT);
    ERRMSG_HAS("expected version kind");
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, NULL, 2, &r), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, NULL, 0, &r), STRATA_INVALID_ARGUMENT);
    ERRMSG_HAS("no events");
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, events, SIZE_MAX, &r),
           STRATA_INVALID_ARGUMENT);
    strata_new_event bad = event_of("t", NULL);
    bad.data_len = 5; /* NULL data with a length */
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, &bad, 1, &r), STRATA_INVALID_ARGUMENT);
    bad = event_of("t", "x");
    bad.data_len = (size_t)PTRDIFF_MAX + 1;
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, &bad, 1, &r), STRATA_INVALID_ARGUMENT);
    ERRMSG_HAS("PTRDIFF_MAX");
    bad = event_of(NULL, "x");
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, &bad, 1, &r), STRATA_INVALID_ARGUMENT);
    bad = event_of("", "x");
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, &bad, 1, &r), STRATA_INVALID_ARGUMENT);
    bad = event_of(BAD_UTF8, "x");
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, &bad, 1, &r), STRATA_INVALID_ARGUMENT);
    bad = event_of("t", "x");
    bad.metadata_len = 3;
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, &bad, 1, &r), STRATA_INVALID_ARGUMENT);

    /* Misuse: NULL and foreign handles. */
    EXPECT(strata_append(NULL, "s", STRATA_EXPECT_ANY, 0, events, 1, &r), STRATA_MISUSE);
    strata_cursor *cursor = NULL;
    EXPECT(strata_read_all(store, 1, 0, &cursor), STRATA_OK);
    EXPECT(strata_append((strata_store *)cursor, "s", STRATA_EXPECT_ANY, 0, events, 1, &r),
           STRATA_MISUSE);
    ERRMSG_HAS("not a strata_store");
    EXPECT(strata_store_free((strata_store *)cursor), STRATA_MISUSE);
    EXPECT(strata_cursor_free(cursor), STRATA_OK);

    /* Multi-stream: all or nothing. */
    strata_new_event one = event_of("moved", "m");
    strata_stream_append parts[2] = {
        {.stream_id = "a", .expected_kind = STRATA_EXPECT_NO_STREAM, .events = &one, .n_events = 1},
        {.stream_id = "b", .expected_kind = STRATA_EXPECT_EXACT, .expected_version = 5,
         .events = &one, .n_events = 1},
    };
    strata_append_result results[2];
    EXPECT(strata_append_multi(store, parts, 2, results), STRATA_CONFLICT);
    CHECK(strata_last_actual_version() == 0);
    CHECK(results[0].last_position == 0 && results[1].last_position == 0);
    strata_stream_info info;
    EXPECT(strata_get_stream_info(store, "a", &info), STRATA_NOT_FOUND);
    parts[1].expected_version = 0;
    parts[1].expected_kind = STRATA_EXPECT_EXACT;
    EXPECT(strata_append_multi(store, parts, 2, results), STRATA_OK);
    CHECK(results[0].last_version == 1 && results[1].last_version == 1);
    CHECK(results[1].first_position == results[0].first_position + 1);
    parts[1].stream_id = "a";
    EXPECT(strata_append_multi(store, parts, 2, results), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_append_multi(store, NULL, 1, results), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_append_multi(NULL, parts, 2, results), STRATA_MISUSE);
    parts[0].stream_id = BAD_UTF8;
    EXPECT(strata_append_multi(store, parts, 1, NULL), STRATA_INVALID_ARGUMENT);

    EXPECT(strata_get_stream_info(store, "order-1", &info), STRATA_OK);
    CHECK(info.version == 5 && info.first_position == 1 && info.last_position == 5);
    EXPECT(strata_get_stream_info(store, "order-1", NULL), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_get_stream_info(store, NULL, &info), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_get_stream_info(NULL, "order-1", &info), STRATA_MISUSE);
    uint64_t last = 0;
    EXPECT(strata_last_position(store, &last), STRATA_OK);
    CHECK(last == 7);
    EXPECT(strata_last_position(store, NULL), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_last_position(NULL, &last), STRATA_MISUSE);
    CHECK(last == 0);
    EXPECT(strata_store_free(store), STRATA_OK);
}

static int read_count(strata_cursor *cursor, uint64_t *versions, int max) {
    strata_event e;
    strata_status s;
    int n = 0;
    while ((s = strata_cursor_next(cursor, &e)) == STRATA_OK) {
        if (n < max) versions[n] = e.version;
        n++;
    }
    CHECK(s == STRATA_DONE);
    CHECK(e.data == NULL && e.position == 0);
    /* After DONE, next keeps answering DONE. */
    EXPECT(strata_cursor_next(cursor, &e), STRATA_DONE);
    strata_cursor_free(cursor);
    return n;
}

static void test_read(void) {
    strata_store *store = open_memory();
    char data[32];
    for (int i = 1; i <= 2500; i++) {
        snprintf(data, sizeof data, "event %d", i);
        strata_new_event e = event_of(i % 2 ? "odd" : "even", data);
        EXPECT(strata_append(store, i <= 2000 ? "big" : "other", STRATA_EXPECT_ANY, 0, &e, 1, NULL),
               STRATA_OK);
    }
    uint64_t v[4000];
    strata_status s_batch;
    strata_cursor *cursor = NULL;
    strata_event e;

    /* The whole stream, crossing pages. */
    EXPECT(strata_read_stream(store, "big", 0, STRATA_FORWARDS, 0, &cursor), STRATA_OK);
    EXPECT(strata_cursor_next(cursor, &e), STRATA_OK);
    CHECK(e.position == 1 && e.version == 1 && e.recorded_at > 0);
    CHECK(e.stream_id_len == 3 && memcmp(e.stream_id, "big", 3) == 0);
    CHECK(e.event_type_len == 3 && memcmp(e.event_type, "odd", 3) == 0);
    CHECK(e.data_len == 7 && memcmp(e.data, "event 1", 7) == 0);
    CHECK(e.metadata_len == 0);
    CHECK(read_count(cursor, v, 4000) == 1999);

    EXPECT(strata_read_stream(store, "big", 0, STRATA_BACKWARDS, 0, &cursor), STRATA_OK);
    CHECK(read_count(cursor, v, 4000) == 2000 && v[0] == 2000 && v[1999] == 1);
    EXPECT(strata_read_stream(store, "big", 1500, STRATA_BACKWARDS, 10, &cursor), STRATA_OK);
    CHECK(read_count(cursor, v, 4000) == 10 && v[0] == 1500 && v[9] == 1491);
    EXPECT(strata_read_stream(store, "big", 1001, STRATA_FORWARDS, 1500, &cursor), STRATA_OK);
    CHECK(read_count(cursor, v, 4000) == 1000 && v[0] == 1001);
    EXPECT(strata_read_stream(store, "nope", 0, STRATA_FORWARDS, 0, &cursor), STRATA_OK);
    CHECK(read_count(cursor, v, 4000) == 0);

    cursor = (strata_cursor *)0x1;
    EXPECT(strata_read_stream(store, "big", 0, 9, 0, &cursor), STRATA_INVALID_ARGUMENT);
    CHECK(cursor == NULL);
    EXPECT(strata_read_stream(store, NULL, 0, STRATA_FORWARDS, 0, &cursor), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_read_stream(store, BAD_UTF8, 0, STRATA_FORWARDS, 0, &cursor),
           STRATA_INVALID_ARGUMENT);
    EXPECT(strata_read_stream(store, "big", 0, STRATA_FORWARDS, 0, NULL), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_read_stream(NULL, "big", 0, STRATA_FORWARDS, 0, &cursor), STRATA_MISUSE);

    /* The log from a position, with a limit. */
    EXPECT(strata_read_all(store, 2400, 0, &cursor), STRATA_OK);
    CHECK(read_count(cursor, v, 4000) == 101);
    EXPECT(strata_read_all(store, 0, 1200, &cursor), STRATA_OK);
    CHECK(read_count(cursor, v, 4000) == 1200);
    EXPECT(strata_read_all(NULL, 0, 0, &cursor), STRATA_MISUSE);
    EXPECT(strata_read_all(store, 0, 0, NULL), STRATA_INVALID_ARGUMENT);

    /* By type. */
    const char *types[] = {"even"};
    EXPECT(strata_read_by_type(store, types, 1, INT64_MIN, INT64_MAX, 0, 0, &cursor), STRATA_OK);
    CHECK(read_count(cursor, v, 4000) == 1250);
    const char *both[] = {"even", "odd"};
    EXPECT(strata_read_by_type(store, both, 2, INT64_MIN, INT64_MAX, 2001, 0, &cursor), STRATA_OK);
    CHECK(read_count(cursor, v, 4000) == 500);
    EXPECT(strata_read_by_type(store, types, 1, 0, 1, 0, 0, &cursor), STRATA_OK);
    CHECK(read_count(cursor, v, 4000) == 0);
    EXPECT(strata_read_by_type(store, NULL, 1, INT64_MIN, INT64_MAX, 0, 0, &cursor),
           STRATA_INVALID_ARGUMENT);
    EXPECT(strata_read_by_type(store, types, 0, INT64_MIN, INT64_MAX, 0, 0, &cursor),
           STRATA_INVALID_ARGUMENT);
    const char *bad_types[] = {"even", NULL};
    EXPECT(strata_read_by_type(store, bad_types, 2, INT64_MIN, INT64_MAX, 0, 0, &cursor),
           STRATA_INVALID_ARGUMENT);
    ERRMSG_HAS("event_types[1]");

    /* Batches: the same events, fewer calls; views valid until the next call. */
    strata_event batch[64];
    size_t got = 99, total = 0;
    uint64_t expect_version = 1;
    int ordered = 1;
    EXPECT(strata_read_stream(store, "big", 0, STRATA_FORWARDS, 0, &cursor), STRATA_OK);
    while ((s_batch = strata_cursor_next_batch(cursor, batch, 64, &got)) == STRATA_OK) {
        CHECK(got >= 1 && got <= 64);
        for (size_t i = 0; i < got; i++) ordered &= batch[i].version == expect_version++;
        CHECK(batch[got - 1].data_len > 6 && memcmp(batch[got - 1].data, "event ", 6) == 0);
        total += got;
    }
    CHECK(s_batch == STRATA_DONE && got == 0);
    CHECK(total == 2000 && ordered);
    EXPECT(strata_cursor_next_batch(cursor, batch, 0, &got), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_cursor_next_batch(cursor, NULL, 64, &got), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_cursor_next_batch(cursor, batch, SIZE_MAX, &got), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_cursor_next_batch(cursor, batch, 64, NULL), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_cursor_next_batch(NULL, batch, 64, &got), STRATA_MISUSE);
    EXPECT(strata_cursor_free(cursor), STRATA_OK);

    /* Cursor misuse. */
    EXPECT(strata_read_all(store, 1, 0, &cursor), STRATA_OK);
    EXPECT(strata_cursor_next(cursor, NULL), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_cursor_next(NULL, &e), STRATA_MISUSE);
    EXPECT(strata_cursor_next((strata_cursor *)store, &e), STRATA_MISUSE);
    EXPECT(strata_cursor_free((strata_cursor *)store), STRATA_MISUSE);
    EXPECT(strata_subscription_free((strata_subscription *)cursor), STRATA_MISUSE);
    /* After strata_close a cursor returns STRATA_CLOSED (as every call on the store does), and
     * after strata_store_free too: the handle stays valid until its own free. */
    strata_cursor *second = NULL;
    EXPECT(strata_read_all(store, 1, 0, &second), STRATA_OK);
    EXPECT(strata_close(store), STRATA_OK);
    EXPECT(strata_cursor_next(cursor, &e), STRATA_CLOSED);
    CHECK(e.position == 0 && e.data == NULL);
    EXPECT(strata_cursor_next_batch(cursor, batch, 64, &got), STRATA_CLOSED);
    CHECK(got == 0);
    EXPECT(strata_cursor_free(cursor), STRATA_OK);
    EXPECT(strata_store_free(store), STRATA_OK);
    EXPECT(strata_cursor_next(second, &e), STRATA_CLOSED);
    EXPECT(strata_cursor_free(second), STRATA_OK);
}

/* Regressions of issue 16: documented uses that crashed or read freed memory. */
static void test_regressions(void) {
    strata_store *store = open_memory();
    strata_new_event one = event_of("moved", "m");
    strata_stream_append parts[3] = {
        {.stream_id = "x", .expected_kind = STRATA_EXPECT_NO_STREAM, .events = &one, .n_events = 1},
        {.stream_id = "y", .expected_kind = STRATA_EXPECT_NO_STREAM, .events = &one, .n_events = 1},
        {.stream_id = "z", .expected_kind = STRATA_EXPECT_NO_STREAM, .events = &one, .n_events = 1},
    };
    /* out_results may be NULL with any number of parts: success, then conflict (SIGSEGV before). */
    EXPECT(strata_append_multi(store, parts, 3, NULL), STRATA_OK);
    CHECK(strata_last_conflict_part() == -1);
    parts[0].stream_id = "x2";
    parts[2].stream_id = "z2";
    EXPECT(strata_append_multi(store, parts, 3, NULL), STRATA_CONFLICT);
    /* The part that conflicted: "y" (index 1) already exists. */
    CHECK(strata_last_conflict_part() == 1);
    ERRMSG_HAS("\"y\"");
    strata_append_result results[3];
    EXPECT(strata_append_multi(store, parts, 3, results), STRATA_CONFLICT);
    CHECK(strata_last_conflict_part() == 1);
    CHECK(results[0].last_position == 0 && results[2].last_position == 0);
    /* Another failure resets it. */
    EXPECT(strata_append(store, "y", STRATA_EXPECT_NO_STREAM, 0, &one, 1, NULL), STRATA_CONFLICT);
    CHECK(strata_last_conflict_part() == -1);
    uint64_t last = 0;
    EXPECT(strata_last_position(store, &last), STRATA_OK);
    CHECK(last == 3);

    /* A second free is detected without reading the freed handle (valgrind: no invalid read). */
    EXPECT(strata_store_free(store), STRATA_OK);
    EXPECT(strata_store_free(store), STRATA_MISUSE);
    ERRMSG_HAS("not a live strata_store");
    EXPECT(strata_close(store), STRATA_MISUSE);
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, &one, 1, NULL), STRATA_MISUSE);

    store = open_memory();
    strata_cursor *cursor = NULL;
    strata_subscription *sub = NULL;
    EXPECT(strata_read_all(store, 1, 0, &cursor), STRATA_OK);
    EXPECT(strata_subscribe(store, 0, NULL, NULL, NULL, 0, &sub), STRATA_OK);
    EXPECT(strata_cursor_free(cursor), STRATA_OK);
    EXPECT(strata_cursor_free(cursor), STRATA_MISUSE);
    strata_event e;
    EXPECT(strata_cursor_next(cursor, &e), STRATA_MISUSE);
    EXPECT(strata_subscription_free(sub), STRATA_OK);
    EXPECT(strata_subscription_free(sub), STRATA_MISUSE);
    EXPECT(strata_subscription_next(sub, 0, &e), STRATA_MISUSE);
    EXPECT(strata_store_free(store), STRATA_OK);
}

static void test_close(void) {
    strata_store *store = open_memory();
    strata_new_event e = event_of("t", "x");
    strata_cursor *cursor = NULL;
    strata_subscription *sub = NULL;
    strata_stream_info info;
    uint64_t last;
    char *text = NULL;

    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, &e, 1, NULL), STRATA_OK);
    EXPECT(strata_close(store), STRATA_OK);
    EXPECT(strata_close(store), STRATA_MISUSE);
    ERRMSG_HAS("already closed");
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, &e, 1, NULL), STRATA_CLOSED);
    strata_stream_append part = {.stream_id = "s", .events = &e, .n_events = 1};
    EXPECT(strata_append_multi(store, &part, 1, NULL), STRATA_CLOSED);
    EXPECT(strata_read_stream(store, "s", 0, STRATA_FORWARDS, 0, &cursor), STRATA_CLOSED);
    CHECK(cursor == NULL);
    EXPECT(strata_read_all(store, 0, 0, &cursor), STRATA_CLOSED);
    const char *types[] = {"t"};
    EXPECT(strata_read_by_type(store, types, 1, INT64_MIN, INT64_MAX, 0, 0, &cursor), STRATA_CLOSED);
    EXPECT(strata_get_stream_info(store, "s", &info), STRATA_CLOSED);
    EXPECT(strata_last_position(store, &last), STRATA_CLOSED);
    EXPECT(strata_subscribe(store, 0, NULL, NULL, NULL, 0, &sub), STRATA_CLOSED);
    CHECK(sub == NULL);
    EXPECT(strata_metrics_text(store, &text), STRATA_CLOSED);
    CHECK(text == NULL);
    strata_projection_status ps;
    EXPECT(strata_projection_status_get(store, "p", &ps), STRATA_CLOSED);
    EXPECT(strata_projections_start(store, 100), STRATA_CLOSED);
    EXPECT(strata_projections_stop(store), STRATA_CLOSED);
    EXPECT(strata_store_free(store), STRATA_OK);

    /* Free without close closes. */
    store = open_memory();
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, &e, 1, NULL), STRATA_OK);
    EXPECT(strata_store_free(store), STRATA_OK);
    EXPECT(strata_close(NULL), STRATA_MISUSE);
}

typedef struct {
    strata_store *store;
    int thread;
    int failed;
} worker_arg;

static void *appender(void *p) {
    worker_arg *arg = p;
    char stream[32];
    snprintf(stream, sizeof stream, "thread-%d", arg->thread);
    for (int i = 0; i < 50; i++) {
        strata_new_event e = event_of("tick", "t");
        if (strata_append(arg->store, stream, STRATA_EXPECT_EXACT, (uint64_t)i, &e, 1, NULL) !=
            STRATA_OK)
            arg->failed++;
    }
    /* Errors are per thread: this thread's conflict does not touch another's message. */
    strata_new_event e = event_of("tick", "t");
    if (strata_append(arg->store, stream, STRATA_EXPECT_NO_STREAM, 0, &e, 1, NULL) !=
            STRATA_CONFLICT ||
        strata_last_actual_version() != 50)
        arg->failed++;
    return NULL;
}

static void test_threads(void) {
    strata_store *store = open_memory();
    pthread_t threads[4];
    worker_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (worker_arg){store, i, 0};
        CHECK(pthread_create(&threads[i], NULL, appender, &args[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        CHECK(args[i].failed == 0);
    }
    uint64_t last = 0;
    EXPECT(strata_last_position(store, &last), STRATA_OK);
    CHECK(last == 200);
    EXPECT(strata_store_free(store), STRATA_OK);
}

static void *late_appender(void *p) {
    strata_store *store = p;
    struct timespec pause = {0, 50 * 1000 * 1000};
    nanosleep(&pause, NULL);
    strata_new_event e = event_of("late", "l");
    strata_append(store, "live-1", STRATA_EXPECT_ANY, 0, &e, 1, NULL);
    return NULL;
}

static void test_subscription(void) {
    strata_store *store = open_memory();
    strata_new_event e[2] = {event_of("a", "1"), event_of("b", "2")};
    EXPECT(strata_append(store, "live-1", STRATA_EXPECT_ANY, 0, e, 2, NULL), STRATA_OK);
    EXPECT(strata_append(store, "other", STRATA_EXPECT_ANY, 0, e, 2, NULL), STRATA_OK);

    strata_subscription *sub = NULL, *typed = NULL, *prefixed = NULL;
    strata_event ev;
    EXPECT(strata_subscribe(store, 0, "live-1", NULL, NULL, 0, &sub), STRATA_OK);
    const char *types[] = {"b"};
    EXPECT(strata_subscribe(store, 0, NULL, NULL, types, 1, &typed), STRATA_OK);
    EXPECT(strata_subscribe(store, 0, NULL, "oth", NULL, 0, &prefixed), STRATA_OK);

    EXPECT(strata_subscription_next(sub, 0, &ev), STRATA_OK);
    CHECK(ev.position == 1 && ev.event_type_len == 1 && ev.event_type[0] == 'a');
    EXPECT(strata_subscription_next(sub, 0, &ev), STRATA_OK);
    CHECK(ev.position == 2);
    EXPECT(strata_subscription_next(sub, 10, &ev), STRATA_TIMEOUT);
    CHECK(ev.data == NULL);

    /* A blocking next wakes for an append from another thread. */
    pthread_t t;
    CHECK(pthread_create(&t, NULL, late_appender, store) == 0);
    EXPECT(strata_subscription_next(sub, 10000, &ev), STRATA_OK);
    CHECK(ev.position == 5 && ev.version == 3 && ev.data_len == 1 && ev.data[0] == 'l');
    pthread_join(t, NULL);

    EXPECT(strata_subscription_next(typed, 0, &ev), STRATA_OK);
    CHECK(ev.position == 2);
    EXPECT(strata_subscription_next(typed, 0, &ev), STRATA_OK);
    CHECK(ev.position == 4);
    EXPECT(strata_subscription_next(typed, 0, &ev), STRATA_TIMEOUT);
    EXPECT(strata_subscription_next(prefixed, 0, &ev), STRATA_OK);
    CHECK(ev.stream_id_len == 5 && memcmp(ev.stream_id, "other", 5) == 0);

    /* Misuse and bad filters. */
    strata_subscription *bad = (strata_subscription *)0x1;
    EXPECT(strata_subscribe(store, 0, "a", "b", NULL, 0, &bad), STRATA_INVALID_ARGUMENT);
    CHECK(bad == NULL);
    EXPECT(strata_subscribe(store, 0, BAD_UTF8, NULL, NULL, 0, &bad), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_subscribe(store, 0, "", NULL, NULL, 0, &bad), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_subscribe(store, 0, NULL, NULL, NULL, 3, &bad), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_subscribe(store, 0, NULL, NULL, NULL, 0, NULL), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_subscribe(NULL, 0, NULL, NULL, NULL, 0, &bad), STRATA_MISUSE);
    EXPECT(strata_subscription_next(NULL, 0, &ev), STRATA_MISUSE);
    EXPECT(strata_subscription_next(sub, 0, NULL), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_subscription_next((strata_subscription *)store, 0, &ev), STRATA_MISUSE);

    /* Closing the store ends a subscription once everything was delivered. */
    EXPECT(strata_close(store), STRATA_OK);
    EXPECT(strata_subscription_next(prefixed, 0, &ev), STRATA_OK);
    EXPECT(strata_subscription_next(prefixed, 1000, &ev), STRATA_DONE);
    EXPECT(strata_subscription_next(sub, 1000, &ev), STRATA_DONE);

    EXPECT(strata_subscription_free(sub), STRATA_OK);
    EXPECT(strata_subscription_free(typed), STRATA_OK);
    EXPECT(strata_subscription_free(prefixed), STRATA_OK);
    EXPECT(strata_store_free(store), STRATA_OK);
}

/* Whether the view `tag` holds exactly `text`. */
static int tag_is(strata_tag tag, const char *text) {
    return tag.len == strlen(text) && memcmp(tag.tag, text, tag.len) == 0;
}

static size_t count_query(strata_store *store, const strata_query *query, uint64_t after,
                          uint64_t *last_position) {
    strata_cursor *cursor = NULL;
    strata_event ev;
    size_t n = 0;
    *last_position = 0;
    EXPECT(strata_read_query(store, query, after, 0, &cursor), STRATA_OK);
    strata_status status;
    while ((status = strata_cursor_next(cursor, &ev)) == STRATA_OK) {
        n++;
        *last_position = ev.position;
    }
    EXPECT(status, STRATA_DONE);
    EXPECT(strata_cursor_free(cursor), STRATA_OK);
    return n;
}

/* Tags, queries and conditional appends (DCB). */
static void test_dcb(void) {
    strata_store *store = open_memory();
    strata_cursor *cursor = NULL;
    strata_event ev;
    strata_append_result result;
    uint64_t last = 0;

    /* A tagged append to the default stream, read back with its tags (sorted, no repeats). */
    const char *course_tags[] = {"course:c1"};
    strata_query_item course_item = {.tags = course_tags, .n_tags = 1};
    strata_query course = {.items = &course_item, .n_items = 1};
    strata_append_condition fresh = {.fail_if_events_match = &course, .after = 0};
    strata_new_event defined = event_of("course_defined", "2");
    defined.tags = course_tags;
    defined.n_tags = 1;
    EXPECT(strata_append_with(store, NULL, STRATA_EXPECT_ANY, 0, &defined, 1, &fresh, &result),
           STRATA_OK);
    CHECK(result.first_position == 1 && result.last_version == 1);

    const char *ann_tags[] = {"student:ann", "course:c1", "student:ann"};
    strata_new_event ann = event_of("student_subscribed", NULL);
    ann.tags = ann_tags;
    ann.n_tags = 3;
    strata_new_event untagged = event_of("noise", "n");
    EXPECT(strata_append(store, "elsewhere", STRATA_EXPECT_ANY, 0, &untagged, 1, NULL),
           STRATA_OK);
    strata_append_condition since_head = {.fail_if_events_match = &course, .after = 1};
    EXPECT(strata_append_with(store, NULL, STRATA_EXPECT_ANY, 0, &ann, 1, &since_head, &result),
           STRATA_OK);
    CHECK(result.first_position == 3 && result.last_version == 2);

    EXPECT(strata_read_stream(store, "$dcb", 0, STRATA_FORWARDS, 0, &cursor), STRATA_OK);
    EXPECT(strata_cursor_next(cursor, &ev), STRATA_OK);
    CHECK(ev.position == 1 && ev.n_tags == 1 && tag_is(ev.tags[0], "course:c1"));
    EXPECT(strata_cursor_next(cursor, &ev), STRATA_OK);
    CHECK(ev.position == 3 && ev.n_tags == 2);
    if (ev.n_tags == 2) CHECK(tag_is(ev.tags[0], "course:c1") && tag_is(ev.tags[1], "student:ann"));
    EXPECT(strata_cursor_next(cursor, &ev), STRATA_DONE);
    CHECK(ev.tags == NULL && ev.n_tags == 0);
    EXPECT(strata_cursor_free(cursor), STRATA_OK);
    /* An untagged event has no tags. */
    EXPECT(strata_read_all(store, 2, 1, &cursor), STRATA_OK);
    EXPECT(strata_cursor_next(cursor, &ev), STRATA_OK);
    CHECK(ev.position == 2 && ev.tags == NULL && ev.n_tags == 0);
    EXPECT(strata_cursor_free(cursor), STRATA_OK);

    /* read_query: items OR'ed, an item's types OR'ed and its tags AND'ed; NULL: every event. */
    CHECK(count_query(store, &course, 0, &last) == 2 && last == 3);
    CHECK(count_query(store, &course, 1, &last) == 1 && last == 3);
    CHECK(count_query(store, &course, 3, &last) == 0);
    CHECK(count_query(store, NULL, 0, &last) == 3 && last == 3);
    const char *both_tags[] = {"course:c1", "student:ann"};
    const char *sub_types[] = {"student_subscribed", "other_type"};
    const char *noise_types[] = {"noise"};
    strata_query_item items[2] = {
        {.types = sub_types, .n_types = 2, .tags = both_tags, .n_tags = 2},
        {.types = noise_types, .n_types = 1},
    };
    strata_query either = {.items = items, .n_items = 2};
    CHECK(count_query(store, &either, 0, &last) == 2 && last == 3);
    strata_query first_only = {.items = items, .n_items = 1};
    CHECK(count_query(store, &first_only, 0, &last) == 1 && last == 3);
    /* Paged with next_batch, tags filled for every event of the batch. */
    strata_event batch[4];
    size_t count = 0;
    EXPECT(strata_read_query(store, &course, 0, 0, &cursor), STRATA_OK);
    EXPECT(strata_cursor_next_batch(cursor, batch, 4, &count), STRATA_OK);
    CHECK(count == 2 && batch[0].n_tags == 1 && batch[1].n_tags == 2);
    if (count == 2) CHECK(tag_is(batch[1].tags[1], "student:ann"));
    EXPECT(strata_cursor_next_batch(cursor, batch, 4, &count), STRATA_DONE);
    EXPECT(strata_cursor_free(cursor), STRATA_OK);
    /* max_count bounds the cursor. */
    EXPECT(strata_read_query(store, NULL, 0, 1, &cursor), STRATA_OK);
    EXPECT(strata_cursor_next(cursor, &ev), STRATA_OK);
    EXPECT(strata_cursor_next(cursor, &ev), STRATA_DONE);
    EXPECT(strata_cursor_free(cursor), STRATA_OK);

    /* A stale condition fails, names the first conflicting position, writes nothing. */
    const char *bob_tags[] = {"course:c1", "student:bob"};
    strata_new_event bob = event_of("student_subscribed", NULL);
    bob.tags = bob_tags;
    bob.n_tags = 2;
    EXPECT(strata_append_with(store, NULL, STRATA_EXPECT_ANY, 0, &bob, 1, &fresh, &result),
           STRATA_CONDITION_FAILED);
    CHECK(strata_last_condition_position() == 1);
    CHECK(result.first_position == 0 && result.last_position == 0);
    ERRMSG_HAS("position 1");
    CHECK(strcmp(strata_status_name(STRATA_CONDITION_FAILED), "STRATA_CONDITION_FAILED") == 0);
    EXPECT(strata_append_with(store, NULL, STRATA_EXPECT_ANY, 0, &bob, 1, &since_head, NULL),
           STRATA_CONDITION_FAILED);
    CHECK(strata_last_condition_position() == 3);
    /* NULL query in a condition: every event; none after the head. */
    strata_append_condition any_after = {.fail_if_events_match = NULL, .after = 2};
    EXPECT(strata_append_with(store, NULL, STRATA_EXPECT_ANY, 0, &bob, 1, &any_after, NULL),
           STRATA_CONDITION_FAILED);
    CHECK(strata_last_condition_position() == 3);
    CHECK(count_query(store, NULL, 0, &last) == 3 && last == 3);
    /* Another failure resets the position to 0. */
    EXPECT(strata_append_with(store, NULL, STRATA_EXPECT_ANY, 0, &bob, 1, NULL, NULL),
           STRATA_INVALID_ARGUMENT);
    CHECK(strata_last_condition_position() == 0);
    /* Up to date: it succeeds. */
    strata_append_condition current = {.fail_if_events_match = &course, .after = 3};
    EXPECT(strata_append_with(store, NULL, STRATA_EXPECT_ANY, 0, &bob, 1, &current, &result),
           STRATA_OK);
    CHECK(result.first_position == 4);

    /* A named stream with an expected version, and the condition. */
    strata_append_condition later = {.fail_if_events_match = &course, .after = 4};
    EXPECT(strata_append_with(store, "course-c1", STRATA_EXPECT_EXACT, 5, &bob, 1, &later, NULL),
           STRATA_CONFLICT);
    CHECK(strata_last_actual_version() == 0);
    EXPECT(strata_append_with(store, "course-c1", STRATA_EXPECT_NO_STREAM, 0, &defined, 1, &later,
                              &result),
           STRATA_OK);
    CHECK(result.first_position == 5 && result.last_version == 1);

    /* append_multi_with: the condition covers every part. */
    strata_new_event n1 = event_of("noise", "1");
    strata_stream_append parts[2] = {
        {.stream_id = "m-1", .expected_kind = STRATA_EXPECT_NO_STREAM, .events = &n1, .n_events = 1},
        {.stream_id = "m-2", .expected_kind = STRATA_EXPECT_ANY, .events = &ann, .n_events = 1},
    };
    strata_append_result results[2];
    EXPECT(strata_append_multi_with(store, parts, 2, &later, results), STRATA_CONDITION_FAILED);
    CHECK(strata_last_condition_position() == 5);
    CHECK(results[0].first_position == 0 && results[1].first_position == 0);
    strata_append_condition at5 = {.fail_if_events_match = &course, .after = 5};
    EXPECT(strata_append_multi_with(store, parts, 2, &at5, results), STRATA_OK);
    CHECK(results[0].first_position == 6 && results[1].first_position == 7);
    EXPECT(strata_append_multi_with(store, parts, 2, NULL, results), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_append_multi_with(store, parts, 2, &at5, results), STRATA_CONFLICT);
    CHECK(strata_last_conflict_part() == 0);
    CHECK(count_query(store, NULL, 0, &last) == 7 && last == 7);

    /* Bad input: a clear status and message, nothing written. */
    strata_new_event bad = event_of("t", NULL);
    bad.n_tags = 1; /* NULL with n_tags > 0 */
    strata_append_condition none_after = {.fail_if_events_match = NULL, .after = 7};
    EXPECT(strata_append_with(store, NULL, STRATA_EXPECT_ANY, 0, &bad, 1, &none_after, NULL),
           STRATA_INVALID_ARGUMENT);
    ERRMSG_HAS("events[0].tags is NULL");
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, &bad, 1, NULL), STRATA_INVALID_ARGUMENT);
    const char *bad_utf8_tags[] = {BAD_UTF8};
    bad.tags = bad_utf8_tags;
    EXPECT(strata_append_with(store, NULL, STRATA_EXPECT_ANY, 0, &bad, 1, &none_after, NULL),
           STRATA_INVALID_ARGUMENT);
    ERRMSG_HAS("not valid UTF-8");
    const char *empty_tags[] = {""};
    bad.tags = empty_tags;
    EXPECT(strata_append_with(store, NULL, STRATA_EXPECT_ANY, 0, &bad, 1, &none_after, NULL),
           STRATA_INVALID_ARGUMENT);
    ERRMSG_HAS("tag");
    const char *null_tags[] = {NULL};
    bad.tags = null_tags;
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, &bad, 1, NULL), STRATA_INVALID_ARGUMENT);
    ERRMSG_HAS("events[0].tags[0] is NULL");
    char long_tag[300];
    memset(long_tag, 'x', 256);
    long_tag[256] = 0;
    const char *long_tags[] = {long_tag};
    bad.tags = long_tags;
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, &bad, 1, NULL), STRATA_INVALID_ARGUMENT);
    ERRMSG_HAS("256 bytes");
    long_tag[255] = 0; /* 255 bytes: allowed */
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, &bad, 1, &result), STRATA_OK);
    CHECK(result.first_position == 8);
    char names[65][8];
    const char *many[65];
    for (int i = 0; i < 65; i++) {
        snprintf(names[i], sizeof names[i], "t%d", i);
        many[i] = names[i];
    }
    bad.tags = many;
    bad.n_tags = 65;
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, &bad, 1, NULL), STRATA_INVALID_ARGUMENT);
    ERRMSG_HAS("65 distinct tags");
    bad.n_tags = 64;
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, &bad, 1, &result), STRATA_OK);
    CHECK(result.first_position == 9);
    uint64_t head = 9;

    /* Bad queries and conditions. */
    strata_query_item empty_item;
    memset(&empty_item, 0, sizeof empty_item);
    strata_query with_empty = {.items = &empty_item, .n_items = 1};
    strata_query no_items = {.items = NULL, .n_items = 0};
    strata_query null_items = {.items = NULL, .n_items = 2};
    const char *bad_types[] = {BAD_UTF8};
    strata_query_item bad_type_item = {.types = bad_types, .n_types = 1};
    strata_query bad_type = {.items = &bad_type_item, .n_items = 1};
    strata_query_item null_tags_item = {.tags = NULL, .n_tags = 1};
    strata_query null_tag_query = {.items = &null_tags_item, .n_items = 1};
    const strata_query *bad_queries[] = {&with_empty, &no_items, &null_items, &bad_type,
                                         &null_tag_query};
    const char *bad_query_messages[] = {"query item 0 has neither", "at least one item; pass a NULL strata_query *",
                                        "items is NULL", "not valid UTF-8", "tags is NULL"};
    for (size_t i = 0; i < sizeof bad_queries / sizeof bad_queries[0]; i++) {
        cursor = (strata_cursor *)0x1;
        EXPECT(strata_read_query(store, bad_queries[i], 0, 0, &cursor), STRATA_INVALID_ARGUMENT);
        ERRMSG_HAS(bad_query_messages[i]);
        CHECK(cursor == NULL);
        strata_append_condition bad_condition = {.fail_if_events_match = bad_queries[i],
                                                 .after = head};
        EXPECT(strata_append_with(store, NULL, STRATA_EXPECT_ANY, 0, &n1, 1, &bad_condition, NULL),
               STRATA_INVALID_ARGUMENT);
        ERRMSG_HAS("condition.fail_if_events_match");
        strata_subscription *sub = (strata_subscription *)0x1;
        EXPECT(strata_subscribe_query(store, 0, bad_queries[i], &sub), STRATA_INVALID_ARGUMENT);
        CHECK(sub == NULL);
    }
    EXPECT(strata_read_query(store, &course, 0, 0, NULL), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_read_query(NULL, &course, 0, 0, &cursor), STRATA_MISUSE);
    EXPECT(strata_append_with(NULL, NULL, STRATA_EXPECT_ANY, 0, &n1, 1, &fresh, NULL), STRATA_MISUSE);
    EXPECT(strata_append_with(store, BAD_UTF8, STRATA_EXPECT_ANY, 0, &n1, 1, &none_after, NULL),
           STRATA_INVALID_ARGUMENT);
    EXPECT(strata_append_with(store, NULL, 99, 0, &n1, 1, &none_after, NULL), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_append_with(store, NULL, STRATA_EXPECT_ANY, 0, NULL, 0, &none_after, NULL),
           STRATA_INVALID_ARGUMENT);
    CHECK(count_query(store, NULL, 0, &last) == head && last == head);

    /* A subscription by query: history, then live events, with their tags. */
    strata_subscription *sub = NULL;
    EXPECT(strata_subscribe_query(store, 0, &either, &sub), STRATA_OK);
    EXPECT(strata_subscription_next(sub, 0, &ev), STRATA_OK);
    CHECK(ev.position == 2 && ev.n_tags == 0 && ev.tags == NULL);
    EXPECT(strata_subscription_next(sub, 0, &ev), STRATA_OK);
    CHECK(ev.position == 3 && ev.n_tags == 2);
    EXPECT(strata_subscription_next(sub, 0, &ev), STRATA_OK); /* m-1's noise */
    CHECK(ev.position == 6);
    EXPECT(strata_subscription_next(sub, 0, &ev), STRATA_OK); /* m-2: ann again */
    CHECK(ev.position == 7 && ev.n_tags == 2);
    EXPECT(strata_subscription_next(sub, 0, &ev), STRATA_TIMEOUT);
    EXPECT(strata_append(store, "late", STRATA_EXPECT_ANY, 0, &ann, 1, NULL), STRATA_OK);
    EXPECT(strata_subscription_next(sub, 1000, &ev), STRATA_OK);
    CHECK(ev.position == head + 1 && ev.n_tags == 2);
    if (ev.n_tags == 2) CHECK(tag_is(ev.tags[1], "student:ann"));
    EXPECT(strata_subscription_free(sub), STRATA_OK);
    EXPECT(strata_subscribe_query(store, 0, &course, NULL), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_subscribe_query(NULL, 0, &course, &sub), STRATA_MISUSE);

    EXPECT(strata_store_free(store), STRATA_OK);
}

static void test_metrics(void) {
    strata_store *store = open_memory();
    strata_new_event e = event_of("t", "x");
    EXPECT(strata_append(store, "s", STRATA_EXPECT_ANY, 0, &e, 1, NULL), STRATA_OK);
    char *text = (char *)0x1;
    EXPECT(strata_metrics_text(store, &text), STRATA_OK);
    CHECK(text != NULL && strstr(text, "strata_") != NULL && strstr(text, "# TYPE") != NULL);
    strata_free(text);
    EXPECT(strata_metrics_text(store, NULL), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_metrics_text(NULL, &text), STRATA_MISUSE);
    CHECK(text == NULL);
    EXPECT(strata_store_free(store), STRATA_OK);
}

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *bytes = malloc((size_t)size);
    *len = fread(bytes, 1, (size_t)size, f);
    fclose(f);
    return bytes;
}

static void test_projections(const char *wasm_path) {
    size_t wasm_len = 0;
    uint8_t *wasm = read_file(wasm_path, &wasm_len);
    CHECK(wasm != NULL && wasm_len > 0);
    if (!wasm) return;
    strata_store *store = open_memory();
    strata_new_event e[3] = {event_of("order_created", "1"), event_of("order_created", "2"),
                             event_of("order_paid", "3")};
    EXPECT(strata_append(store, "o", STRATA_EXPECT_ANY, 0, e, 3, NULL), STRATA_OK);

    strata_projection_status st;
    EXPECT(strata_projection_status_get(store, "event-counter", &st), STRATA_NOT_FOUND);
    const uint8_t junk[] = {0, 'a', 's', 'm', 1, 0, 0, 0, 42};
    EXPECT(strata_projection_register_wasm(store, junk, sizeof junk, &st), STRATA_INVALID_ARGUMENT);
    CHECK(st.name[0] == 0);
    EXPECT(strata_projection_register_wasm(store, NULL, 10, &st), STRATA_INVALID_ARGUMENT);
    EXPECT(strata_projection_register_wasm(NULL, wasm, wasm_len, &st), STRATA_MISUSE);

    EXPECT(strata_projection_register_wasm(store, wasm, wasm_len, &st), STRATA_OK);
    CHECK(strcmp(st.name, "event-counter") == 0 && st.version == 1 && st.checkpoint == 0);
    CHECK(st.lag == 3);
    EXPECT(strata_projection_catch_up(store, "event-counter", &st), STRATA_OK);
    CHECK(st.checkpoint == 3 && st.lag == 0 && st.phase == STRATA_PHASE_LIVE);
    EXPECT(strata_projection_status_get(store, "event-counter", &st), STRATA_OK);
    CHECK(st.checkpoint == 3);

    uint8_t *response = (uint8_t *)0x1;
    size_t response_len = 99;
    const uint8_t empty_map[] = {0x80};
    EXPECT(strata_projection_query(store, "event-counter", empty_map, 1, &response, &response_len),
           STRATA_OK);
    /* {"order_created": 2, "order_paid": 1} in MessagePack. */
    const uint8_t expected[] = {0x82, 0xad, 'o', 'r', 'd', 'e', 'r', '_', 'c', 'r', 'e', 'a', 't',
                                'e',  'd',  2,   0xaa, 'o', 'r', 'd', 'e', 'r', '_', 'p', 'a', 'i',
                                'd',  1};
    CHECK(response_len == sizeof expected && memcmp(response, expected, sizeof expected) == 0);
    strata_free(response);
    EXPECT(strata_projection_query(store, "nope", empty_map, 1, &response, &response_len),
           STRATA_NOT_FOUND);
    CHECK(response == NULL && response_len == 0);
    EXPECT(strata_projection_query(store, "event-counter", NULL, 1, &response, &response_len),
           STRATA_INVALID_ARGUMENT);
    EXPECT(strata_projection_query(store, "event-counter", empty_map, 1, NULL, &response_len),
           STRATA_INVALID_ARGUMENT);

    EXPECT(strata_projection_reset(store, "event-counter", &st), STRATA_OK);
    CHECK(st.checkpoint == 0 && st.phase == STRATA_PHASE_CATCHING_UP);
    EXPECT(strata_projection_reset(store, "nope", &st), STRATA_NOT_FOUND);
    EXPECT(strata_projection_resume(store, "event-counter", &st), STRATA_OK);
    EXPECT(strata_projection_catch_up(store, "nope", &st), STRATA_NOT_FOUND);
    EXPECT(strata_projection_catch_up(store, NULL, &st), STRATA_INVALID_ARGUMENT);

    /* The background runner catches up on its own. */
    EXPECT(strata_projections_start(store, 50), STRATA_OK);
    EXPECT(strata_projections_start(store, 50), STRATA_MISUSE);
    for (int i = 0; i < 200; i++) {
        EXPECT(strata_projection_status_get(store, "event-counter", &st), STRATA_OK);
        if (st.checkpoint == 3) break;
        struct timespec pause = {0, 20 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    CHECK(st.checkpoint == 3);
    EXPECT(strata_projections_stop(store), STRATA_OK);
    EXPECT(strata_projections_stop(store), STRATA_OK);

    EXPECT(strata_store_free(store), STRATA_OK);
    free(wasm);
    /* Releases the WebAssembly engine, so that valgrind sees no block of it left. */
    EXPECT(strata_shutdown(), STRATA_OK);
    EXPECT(strata_shutdown(), STRATA_OK);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s core DIR | projections WASM\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "core") == 0) {
        test_library();
        test_open(argv[2]);
        test_append();
        test_read();
        test_regressions();
        test_close();
        test_threads();
        test_subscription();
        test_dcb();
        test_metrics();
    } else if (strcmp(argv[1], "projections") == 0) {
        test_projections(argv[2]);
    } else {
        fprintf(stderr, "unknown mode %s\n", argv[1]);
        return 2;
    }
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("all checks passed (%s)\n", argv[1]);
    return 0;
}
