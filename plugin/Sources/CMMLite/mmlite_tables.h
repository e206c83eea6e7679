/*
 * Helpers the native triggers share (mmlite_apply.c, mmlite_capture.c).
 * Not under include/: Swift does not see them.
 */
#ifndef MMLITE_TABLES_H
#define MMLITE_TABLES_H

#include "postgres.h"
#include "fmgr.h"
#include "access/tupdesc.h"
#include "utils/relcache.h"

/* 0-based index of the live column `name` in desc, or -1. */
extern int	mmlite_column_index(TupleDesc desc, const char *name);

/* Whether a text datum is the C string `cstring`. */
extern bool mmlite_text_equals(Datum value, const char *cstring);

/*
 * The equality functions of `index`'s key columns into equality[], looked
 * up only when *cached_index is another index (then set to this one).
 */
extern void mmlite_key_equality(Relation index, Oid *cached_index, FmgrInfo *equality);

/* Calls the trigger function `function` on the trigger call `outer` (same trigger data, same transition tables). */
extern Datum mmlite_call_trigger_function(FmgrInfo *function, FunctionCallInfo outer);

#endif							/* MMLITE_TABLES_H */
