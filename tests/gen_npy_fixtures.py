#!/usr/bin/python3
"""Writes the .npy fixtures of tests/test_npy.c with NumPy itself, so the C
reader is checked against files NumPy wrote rather than against its own
writer. The values follow formulas that test_npy.c recomputes:

    x_u8   (7, 1, 3, 4) uint8    x[i].flat[k] = (i*37 + k*11 + 5) % 256
    x_f*   (N, ...)     float    x[i].flat[k] = ((i*7 + k*3) % 11 - 5) / 4 + 1/8
    y_*    (N,)         integer  y[i] = (i*3 + 1) % 5

Run from the repository root: /usr/bin/python3 tests/gen_npy_fixtures.py
"""
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "npy")


def xu8(n, shape):
    per = int(np.prod(shape))
    i = np.arange(n)[:, None]
    k = np.arange(per)[None, :]
    return ((i * 37 + k * 11 + 5) % 256).astype(np.uint8).reshape((n,) + shape)


def xf(n, shape, dtype):
    per = int(np.prod(shape))
    i = np.arange(n)[:, None]
    k = np.arange(per)[None, :]
    v = ((i * 7 + k * 3) % 11 - 5) / 4 + 1 / 8
    return v.astype(dtype).reshape((n,) + shape)


def labels(n, dtype):
    return ((np.arange(n) * 3 + 1) % 5).astype(dtype)


def save(name, arr, version=None):
    path = os.path.join(OUT, name)
    if version is None:
        np.save(path, arr)
    else:
        with open(path, "wb") as f:
            np.lib.format.write_array(f, arr, version=version)


def main():
    os.makedirs(OUT, exist_ok=True)
    save("x_u8.npy", xu8(7, (1, 3, 4)))
    save("x_u8_v3.npy", xu8(7, (1, 3, 4)), version=(3, 0))
    save("x_f4.npy", xf(5, (3,), "<f4"))
    save("x_f4_v2.npy", xf(5, (3,), "<f4"), version=(2, 0))
    save("x_f8_be.npy", xf(5, (2, 2), ">f8"))
    save("x_f4_4d.npy", xf(5, (2, 1, 2, 3), "<f4"))
    save("x_f4_fortran.npy", np.asfortranarray(xf(5, (3,), "<f4")))
    save("y_u1_7.npy", labels(7, "u1"))
    save("y_i1_7.npy", labels(7, "i1"))
    save("y_u2be_7.npy", labels(7, ">u2"))
    save("y_i4_5.npy", labels(5, "<i4"))
    save("y_i8_5.npy", labels(5, "<i8"))
    save("y_u8_5.npy", labels(5, "<u8"))
    save("y_i2be_5.npy", labels(5, ">i2"))
    save("x_obj.npy", np.array([[1, 2], [3, 4]], dtype=object))
    save("y_bool_5.npy", np.array([True, False, True, False, True]))


if __name__ == "__main__":
    main()
