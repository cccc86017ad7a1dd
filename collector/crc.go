package collector

// The CRC-32 (IEEE) of a concatenation from the CRCs of its parts, so that
// the gzip trailer of a body made of stored pieces needs no pass over
// their bytes. A CRC is a remainder modulo the polynomial P: appending n
// bytes to a message with CRC c1 gives c1·x^(8n) + c2 (mod P) for the
// appended bytes' CRC c2 (zlib's crc32_combine). Polynomials are in the
// reflected bit order of hash/crc32: x^0 is the top bit.

// crcPoly is the IEEE polynomial, reflected.
const crcPoly = 0xedb88320

// gfMul returns a·b modulo P.
func gfMul(a, b uint32) uint32 {
	var p uint32
	for m := uint32(1) << 31; m != 0; m >>= 1 {
		if a&m != 0 {
			p ^= b
		}
		if b&1 != 0 {
			b = b>>1 ^ crcPoly
		} else {
			b >>= 1
		}
	}
	return p
}

// crcShift returns x^(8n) modulo P: what a CRC is multiplied by when n
// bytes are appended after its message.
func crcShift(n int) uint32 {
	p := uint32(1) << 31  // x^0
	sq := uint32(1) << 23 // x^8: one byte
	for ; n > 0; n >>= 1 {
		if n&1 != 0 {
			p = gfMul(sq, p)
		}
		sq = gfMul(sq, sq)
	}
	return p
}

// crcCombine returns the CRC of a message with CRC crc1 followed by one
// with CRC crc2 whose length gave shift2 (crcShift).
func crcCombine(crc1, crc2, shift2 uint32) uint32 {
	return gfMul(shift2, crc1) ^ crc2
}
