package archive

import (
	"io"

	"github.com/klauspost/compress/zstd"
)

// zstdChunkSize is the input size of each zstd frame. Frames are compressed
// independently, so the output depends on it and not on how many frames
// are compressed at once.
const zstdChunkSize = 4 << 20

// newZstdWriter returns a writer of a zstd stream: its input cut into
// chunks of zstdChunkSize, each compressed as an independent frame on up
// to `workers` goroutines at once, the frames written in order, at most
// `workers` of them waiting. A zstd stream may hold any number of frames
// (RFC 8878 §3.1), so every decoder reads the result.
func newZstdWriter(w io.Writer, level zstd.EncoderLevel, workers int) (io.WriteCloser, error) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(level),
		zstd.WithEncoderConcurrency(workers),
		zstd.WithEncoderCRC(true),
		zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, err
	}
	bw := newBlockWriter(w, zstdChunkSize, workers, workers, func(dst, in []byte) ([]byte, error) {
		return enc.EncodeAll(in, dst), nil // safe for concurrent use
	})
	return zstdWriter{bw, enc}, nil
}

// zstdWriter closes its encoder once every frame is written.
type zstdWriter struct {
	*blockWriter
	enc *zstd.Encoder
}

func (z zstdWriter) Close() error {
	err := z.blockWriter.Close()
	z.enc.Close()
	return err
}
