/*
 * launch/train_data.h: the default dataset of `tapegrad train` (private to
 * launch/).
 */
#ifndef TAPEGRAD_LAUNCH_TRAIN_DATA_H
#define TAPEGRAD_LAUNCH_TRAIN_DATA_H

#include <stddef.h>

/* Where the Debian package dataset-fashion-mnist installs the IDX files. */
#define TG_FMNIST_IDX_DIR "/usr/share/datasets/fashion-mnist"
/* The converted file, in $XDG_CACHE_HOME/tapegrad/ (or ~/.cache/tapegrad/). */
#define TG_FMNIST_CACHE_NAME "fashion-mnist.h5"

/*
 * Writes the path of the Fashion-MNIST cache file into path (len bytes),
 * converting the IDX files of idx_dir into it first when it does not exist.
 * The conversion writes both splits under a temporary name in the cache
 * folder and renames the result into place, so an interrupted conversion
 * never leaves a partial cache behind. Prints a line when it converts, and a
 * message on failure. Returns 0, or an exit code (3 for missing or bad source
 * files, 1 when the cache cannot be written).
 */
int tg_fmnist_cache(const char *idx_dir, char *path, size_t len);

#endif
