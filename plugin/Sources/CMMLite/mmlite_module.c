/*
 * The C half of mmlite.so: what Swift cannot express (PG_MODULE_MAGIC, fmgr
 * macros) and the trampolines PostgreSQL calls. A trampoline calls Swift,
 * which returns normally in every case; if Swift reports an error the
 * trampoline re-raises it from here, a frame with no Swift above it.
 */
#include "mmlite_pg.h"
#include "mmlite_change_message.h"

#include "utils/builtins.h"

/* From the repository's VERSION file, passed by the Makefile. */
#ifndef MMLITE_VERSION
#error "MMLITE_VERSION is not defined: build the plugin with make (see the Makefile)"
#endif

/* The magic block differs per major (PG15 abi_extra, PG18 name/version). */
#ifdef PG_MODULE_MAGIC_EXT
PG_MODULE_MAGIC_EXT(.name = "mmlite", .version = MMLITE_VERSION);
#else
PG_MODULE_MAGIC;
#endif

/* Implemented in Swift (Sources/MMLitePlugin). */
extern bool mmlite_swift_plugin_init(OutputPluginCallbacks *cb, MMLitePGError *error);

extern PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	MMLitePGError error = NULL;

	if (!mmlite_swift_plugin_init(cb, &error))
	{
		if (error != NULL)
			ReThrowError(error);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("mmlite could not initialise the pgoutput callbacks")));
	}
	/* Defined only for ChangeMessageTests' stand-in of a build from before change messages. */
#ifndef MMLITE_WITHOUT_CHANGE_MESSAGE_DECODING
	mmlite_change_messages_init(cb);
#endif
}

bool
mmlite_guarded_pgoutput_init(OutputPluginCallbacks *cb, MMLitePGError *error)
{
	MemoryContext caller_context = CurrentMemoryContext;
	volatile bool ok = false;

	*error = NULL;
	PG_TRY();
	{
		LogicalOutputPluginInit pgoutput_init;

		pgoutput_init = (LogicalOutputPluginInit)
			load_external_function("pgoutput", "_PG_output_plugin_init", true, NULL);
		pgoutput_init(cb);
		ok = true;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller_context);
		*error = CopyErrorData();
		FlushErrorState();
	}
	PG_END_TRY();
	return ok;
}

/*
 * SQL: mmlite.version() — lets tools check which plugin build a server loads.
 * The text is "mmlite <VERSION>"; C owns it since MMLITE_VERSION is a C define.
 */
PG_FUNCTION_INFO_V1(mmlite_version);

Datum
mmlite_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text("mmlite " MMLITE_VERSION));
}
