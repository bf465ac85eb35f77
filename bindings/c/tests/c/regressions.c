/* Regression checks for the C ABI defects of issue 16, written against the functions the
 * header had before the fixes, so that the same program runs against an old library (where
 * it failed: see RELIABILITY.md, "Found and fixed") and the current one (where it must pass):
 *
 *   regressions          every check; exit 0 when all passed, 1 when one failed
 *
 * Each check runs in a child process of its own, so that a crash (the old library's SIGSEGV)
 * fails that check and the others still run. Compiled and run under valgrind by
 * bindings/c/tests/c_api.rs; a memory error in a child makes it exit 1 (--error-exitcode). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "strata.h"

static int failures = 0;

static void check(int ok, const char *what) {
    printf("%s: %s\n", ok ? "pass" : "FAIL", what);
    fflush(stdout);
    if (!ok) {
        failures++;
    }
}

static strata_store *open_memory(void) {
    strata_options options;
    strata_store *store = NULL;
    strata_options_init(&options);
    options.durability = STRATA_FAST;
    if (strata_open_in_memory(&options, &store) != STRATA_OK) {
        fprintf(stderr, "cannot open a store: %s\n", strata_errmsg());
        return NULL;
    }
    return store;
}

static strata_new_event event_of(const char *type, const char *data, const uint8_t *id) {
    strata_new_event e;
    memset(&e, 0, sizeof e);
    e.event_type = type;
    e.data = (const uint8_t *)data;
    e.data_len = strlen(data);
    e.event_id = id;
    return e;
}

/* The header says out_results may be NULL; the old library advanced it from NULL (SIGSEGV). */
static void append_multi_with_null_results(strata_store *store) {
    strata_new_event e = event_of("placed", "{}", NULL);
    strata_stream_append parts[2];
    memset(parts, 0, sizeof parts);
    parts[0].stream_id = "multi-a";
    parts[0].expected_kind = STRATA_EXPECT_ANY;
    parts[0].events = &e;
    parts[0].n_events = 1;
    parts[1] = parts[0];
    parts[1].stream_id = "multi-b";
    check(strata_append_multi(store, parts, 2, NULL) == STRATA_OK,
          "append_multi of two parts with NULL out_results succeeds");
    parts[1].expected_kind = STRATA_EXPECT_NO_STREAM;
    check(strata_append_multi(store, parts, 2, NULL) == STRATA_CONFLICT,
          "append_multi of two parts with NULL out_results reports the conflict");
}

/* Idempotency is "the same append again": the same id with other data is not a retry. */
static void reused_id_with_other_data(strata_store *store) {
    const uint8_t id[16] = {0x01, 0x8f, 0, 0, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 0x16};
    strata_new_event first = event_of("placed", "{\"amount\":1}", id);
    strata_new_event other = event_of("placed", "{\"amount\":2}", id);
    strata_append_result result;
    check(strata_append(store, "retry", STRATA_EXPECT_ANY, 0, &first, 1, &result) == STRATA_OK,
          "the first append with an id succeeds");
    check(strata_append(store, "retry", STRATA_EXPECT_ANY, 0, &first, 1, &result) == STRATA_OK &&
              result.already_stored == 1,
          "the same append again is answered as already stored");
    strata_status status = strata_append(store, "retry", STRATA_EXPECT_ANY, 0, &other, 1, &result);
    check(status != STRATA_OK, "the same id with other data is refused, not taken as a retry");
}

/* The old library's open cursor kept returning events after strata_close. */
static void cursor_after_close(void) {
    strata_store *store = open_memory();
    if (store == NULL) {
        failures++;
        return;
    }
    strata_new_event events[2] = {event_of("placed", "{}", NULL), event_of("paid", "{}", NULL)};
    strata_append(store, "order-1", STRATA_EXPECT_ANY, 0, events, 2, NULL);
    strata_cursor *cursor = NULL;
    strata_event event;
    strata_read_all(store, 1, 0, &cursor);
    check(cursor != NULL && strata_cursor_next(cursor, &event) == STRATA_OK,
          "a cursor reads before close");
    strata_close(store);
    check(strata_cursor_next(cursor, &event) == STRATA_CLOSED,
          "a cursor answers STRATA_CLOSED after its store was closed");
    strata_cursor_free(cursor);
    strata_store_free(store);
}

/* A second free must be MISUSE without reading the freed memory (valgrind: no invalid read). */
static void second_free(void) {
    strata_store *store = open_memory();
    if (store == NULL) {
        failures++;
        return;
    }
    check(strata_store_free(store) == STRATA_OK, "the first free succeeds");
    check(strata_store_free(store) == STRATA_MISUSE, "a second free answers STRATA_MISUSE");
}

/* Runs `check` on a fresh in-memory store. */
static void with_store(void (*check)(strata_store *)) {
    strata_store *store = open_memory();
    if (store == NULL) {
        failures++;
        return;
    }
    check(store);
    strata_store_free(store);
}

static void append_multi_checks(void) { with_store(append_multi_with_null_results); }

static void retry_checks(void) { with_store(reused_id_with_other_data); }

/* Runs `check_group` in a child; a child that crashes or exits non-zero is a failure. */
static void in_child(const char *name, void (*check_group)(void)) {
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        failures++;
        return;
    }
    if (child == 0) {
        failures = 0;
        check_group();
        fflush(stdout);
        _exit(failures == 0 ? 0 : 1);
    }
    int status = 0;
    waitpid(child, &status, 0);
    if (WIFSIGNALED(status)) {
        printf("FAIL: %s crashed with signal %d\n", name, WTERMSIG(status));
        failures++;
    } else if (WEXITSTATUS(status) != 0) {
        printf("FAIL: %s exited with %d\n", name, WEXITSTATUS(status));
        failures++;
    }
}

int main(void) {
    in_child("append_multi with NULL out_results", append_multi_checks);
    in_child("a retry with other data", retry_checks);
    in_child("a cursor after close", cursor_after_close);
    in_child("a second free", second_free);
    printf("%d failed\n", failures);
    return failures == 0 ? 0 : 1;
}
