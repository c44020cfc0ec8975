# capture.pxi: Capture record scanning: the hot loops of pcap and pcapng indexing, stopping at the
# first record that is not plainly sound. Twin: ``kemu/io/capture.py`` (``pcap_scan``,
# ``pcapng_scan``).

# The hot loops of ``kemu.io.capture`` (read it for the rules): walk records of one kind from
# ``r`` in the window ``w`` and stop at the first one that is not plainly sound, leaving it to
# the careful Python code. Same results as ``kemu.io.capture.pcap_scan``/``pcapng_scan``.

cdef inline uint32_t rd32e(const uint8_t* p, bint big) noexcept nogil:
    if big:
        return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]
    return (<uint32_t>p[3] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[1] << 8) | p[0]


def pcap_scan(w, Py_ssize_t r, Py_ssize_t remaining, int64_t limit, bint big):
    """Start offsets of up to ``remaining`` pcap records from ``r``; see capture.pcap_scan."""
    cdef const uint8_t[::1] v = w
    cdef Py_ssize_t end = v.shape[0], k = 0, q
    cdef int64_t c
    if r < 0 or remaining < 0:
        raise ValueError("pcap_scan: negative start or count")
    out = np.empty(max(0, min(remaining, (end - r) // 16 + 1)), np.int64)
    cdef int64_t[::1] o = out
    cdef const uint8_t* b = &v[0] if end else NULL
    with nogil:
        while k < o.shape[0]:
            q = r + 16
            if q > end:
                break
            c = rd32e(b + r + 8, big)
            if c > limit:
                break
            q += c
            if q > end:
                break
            o[k] = r
            k += 1
            r = q
    return out[:k], r, k == remaining


def pcapng_scan(w, Py_ssize_t r, Py_ssize_t remaining, uint32_t kind, uint32_t minlen,
                bint big):
    """Start offsets of up to ``remaining`` sound pcapng blocks of type ``kind`` from ``r``;
    see capture.pcapng_scan."""
    cdef const uint8_t[::1] v = w
    cdef Py_ssize_t end = v.shape[0], k = 0, q
    cdef uint32_t bl
    if r < 0 or remaining < 0:
        raise ValueError("pcapng_scan: negative start or count")
    out = np.empty(max(0, min(remaining, (end - r) // 12 + 1)), np.int64)
    cdef int64_t[::1] o = out
    cdef const uint8_t* b = &v[0] if end else NULL
    with nogil:
        while k < o.shape[0]:
            if r + 12 > end:
                break
            bl = rd32e(b + r + 4, big)
            if rd32e(b + r, big) != kind or bl < minlen or bl & 3:
                break
            q = r + bl
            if q > end or rd32e(b + q - 4, big) != bl:
                break
            o[k] = r
            k += 1
            r = q
    return out[:k], r
