/*
 * The only way a version string reaches Swift code: the text of the
 * repository's VERSION file, embedded here at compile time (#embed; the
 * compiler records the file as a dependency, so editing VERSION rebuilds
 * this file — a define computed in Package.swift would not, SwiftPM caches
 * the manifest). MMLiteCore.version trims the trailing newline.
 */
#include "mmlite_version.h"

#pragma clang diagnostic ignored "-Wc23-extensions"

static const char version_file[] = {
#embed "../../VERSION"
	, 0
};

const char *
mmlite_core_version(void)
{
	return version_file;
}
