/*
 * The only C header the Swift side of the plugin imports.
 *
 * Everything PostgreSQL-version specific in the plugin lives here and in
 * mmlite_module.c (see docs/architecture.md, "Version differences"): the Swift
 * code sees the same small surface on every major from 13 to 18.
 */
#ifndef MMLITE_PG_H
#define MMLITE_PG_H

#include "postgres.h"
#include "fmgr.h"
#include "replication/logical.h"
#include "replication/output_plugin.h"
#include "replication/origin.h"

#include "mmlite_contract.h"

/*
 * Result of a guarded PostgreSQL call: NULL when the call succeeded, else the
 * copied error, which the C trampoline re-raises once no Swift frame is left
 * on the stack (PostgreSQL errors are longjmps, Swift cannot be jumped over).
 */
typedef struct ErrorData *MMLitePGError;

/*
 * Loads the running server's own pgoutput and lets its
 * _PG_output_plugin_init fill `cb`. Never raises; on failure returns false
 * and stores the error in *error.
 */
extern bool mmlite_guarded_pgoutput_init(OutputPluginCallbacks *cb,
										 MMLitePGError *error);

/* PostgreSQL's InvalidRepOriginId as a plain constant for Swift. */
static inline RepOriginId
mmlite_invalid_origin(void)
{
	return InvalidRepOriginId;
}

#endif							/* MMLITE_PG_H */
