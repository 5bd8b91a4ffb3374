package archive

import "io"

// readAhead reads its source on its own goroutine, up to depth chunks ahead
// of the consumer, so that fetching, hashing and decompressing overlap with
// writing files.
type readAhead struct {
	chunks chan []byte
	free   chan []byte
	stop   chan struct{}
	done   chan struct{}
	cur    []byte // chunk being consumed, from cur[off:]
	off    int
	err    error // final error, valid once chunks is closed
}

func newReadAhead(r io.Reader, size, depth int) *readAhead {
	ra := &readAhead{
		chunks: make(chan []byte, depth),
		free:   make(chan []byte, depth+1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	for range depth + 1 {
		ra.free <- make([]byte, size)
	}
	go ra.fill(r)
	return ra
}

func (ra *readAhead) fill(r io.Reader) {
	defer close(ra.done)
	defer close(ra.chunks)
	for {
		var buf []byte
		select {
		case buf = <-ra.free:
		case <-ra.stop:
			return
		}
		n, err := io.ReadFull(r, buf[:cap(buf)])
		if n > 0 {
			select {
			case ra.chunks <- buf[:n]:
			case <-ra.stop:
				return
			}
		}
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		if err != nil {
			ra.err = err
			return
		}
	}
}

func (ra *readAhead) Read(p []byte) (int, error) {
	for ra.off == len(ra.cur) {
		if ra.cur != nil {
			ra.free <- ra.cur
			// off too: a Read after the end (bufio reads again once it
			// has returned io.EOF) must not slice the nil chunk.
			ra.cur, ra.off = nil, 0
		}
		buf, ok := <-ra.chunks
		if !ok {
			return 0, ra.err
		}
		ra.cur, ra.off = buf, 0
	}
	n := copy(p, ra.cur[ra.off:])
	ra.off += n
	return n, nil
}

// Close stops the reading goroutine and waits for it.
func (ra *readAhead) Close() error {
	close(ra.stop)
	<-ra.done
	return nil
}
