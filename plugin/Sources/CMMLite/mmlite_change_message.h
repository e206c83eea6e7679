/*
 * Change messages: how the native capture trigger sends a change row without
 * storing it (docs/conflicts.md, "Change messages"). The trigger writes the
 * row it would have inserted into "s.t$changes" as a transactional logical
 * decoding message; the output plugin, decoding it, hands pgoutput an INSERT
 * of that row into that table. On the wire and on the subscriber nothing
 * differs from an inserted change row; locally the heap tuple, its index
 * entries and their later pruning are saved.
 *
 * Only safe when whatever decodes this database's WAL turns the messages back
 * into rows; mmlite_change_messages_decoded() checks that per statement.
 * Not under include/: Swift does not see it.
 */
#ifndef MMLITE_CHANGE_MESSAGE_H
#define MMLITE_CHANGE_MESSAGE_H

#include "postgres.h"
#include "executor/tuptable.h"
#include "replication/output_plugin.h"
#include "utils/relcache.h"

/* The messages' prefix, and the layout version in their first four bytes. */
#define MMLITE_CHANGE_MESSAGE_PREFIX "mmlite.change"
#define MMLITE_CHANGE_MESSAGE_FORMAT 1

/* The slot plugin name that decodes change messages (the library's own). */
#define MMLITE_SLOT_PLUGIN "mmlite"

/*
 * The capture side: true when every logical slot of this database uses the
 * mmlite plugin and every one being decoded right now is decoded by a build
 * that translates change messages (it says so with a session lock, see
 * mmlite_announce_change_decoding). Else the change row is inserted.
 */
extern bool mmlite_change_messages_decoded(void);

/* The capture side: logs `change`, a row of `changes_rel`, as a change message. */
extern void mmlite_log_change_message(Relation changes_rel, TupleTableSlot *change);

/* The plugin side: wraps pgoutput's startup, change and message callbacks in `cb`. */
extern void mmlite_change_messages_init(OutputPluginCallbacks *cb);

#endif							/* MMLITE_CHANGE_MESSAGE_H */
