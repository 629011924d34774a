//go:build linux

package evloop

import (
	"sync/atomic"
	"syscall"
	"unsafe"
)

// A Send is one write of a batch (SendAll): B to the socket Fd, as Write
// would, or as WriteBeforeClose would with More. SendAll sets N and Errno
// as the call would have returned them.
type Send struct {
	Fd    int
	B     []byte
	More  bool
	N     int
	Errno syscall.Errno
}

// flags returns sendto's flags for s: those of Write, or of
// WriteBeforeClose with More.
func (s *Send) flags() int {
	if s.More {
		return syscall.MSG_NOSIGNAL | syscall.MSG_MORE
	}
	return syscall.MSG_NOSIGNAL
}

// SendAllBatch is how many writes SendAll makes in one syscall.
const SendAllBatch = ringEntries

// SendAll makes every write of sends, on the loop only. Through io_uring
// they go in one io_uring_enter for each SendAllBatch of them, so that no
// reader a write wakes takes the loop's CPU before the last write is made
// (a task is preempted on its way back from a syscall, not inside one, on
// a kernel without full preemption); without io_uring (a kernel before
// 6.3, a seccomp filter, kernel.io_uring_disabled), one sendto each.
func (l *Loop) SendAll(sends []Send) {
	if l.ring == nil && !l.noRing {
		r, err := newRing()
		if err != 0 {
			l.noRing = true
		} else {
			l.ring = r
		}
	}
	for len(sends) > 0 {
		k := min(len(sends), ringEntries)
		if l.ring != nil && !l.ring.sendAll(sends[:k]) {
			// io_uring_enter failed, having submitted nothing: the
			// entries it left queued must never go.
			l.ring.close()
			l.ring, l.noRing = nil, true
		}
		if l.ring == nil {
			for i := range sends[:k] {
				s := &sends[i]
				s.N, s.Errno = send(s.Fd, s.B, s.flags())
				if s.N < 0 {
					s.N = 0
				}
			}
		}
		sends = sends[k:]
	}
}

// ringEntries is the size of a loop's submission queue.
const ringEntries = 256

const (
	sysIOUringSetup = 425
	sysIOUringEnter = 426

	ioringOpSend           = 26
	ioringEnterGetEvents   = 1
	ioringFeatSingleMmap   = 1
	ioringFeatRegRegRing   = 1 << 13 // Linux 6.3
	ioringOffSQRing        = 0
	ioringOffCQRing        = 0x8000000
	ioringOffSQEs          = 0x10000000
	ioringSetupCoopTaskrun = 1 << 8
)

type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqringOffsets
	cqOff                                                                  cqringOffsets
}

type sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	msgFlags    uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFdIn  int32
	addr3       uint64
	pad         uint64
}

type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// ring is an io_uring instance used for sends only.
type ring struct {
	fd             int
	sq, cq, sqes   []byte
	sqHead, sqTail *uint32
	sqMask         uint32
	sqArray        []uint32
	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           []cqe
	sqeSlice       []sqe
}

func newRing() (*ring, syscall.Errno) {
	var p uringParams
	p.flags = ioringSetupCoopTaskrun
	fd, _, errno := syscall.RawSyscall(sysIOUringSetup, ringEntries, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, errno
	}
	if p.features&ioringFeatRegRegRing == 0 {
		// Before 6.3 (the feature stands for the version), not every
		// kernel completes a send with MSG_DONTWAIT at once, as sendAll
		// waits for it to: a send that would block could wait for the
		// socket instead, and the loop with it.
		syscall.Close(int(fd))
		return nil, syscall.ENOSYS
	}
	r := &ring{fd: int(fd)}
	sqSize := int(p.sqOff.array) + int(p.sqEntries)*4
	cqSize := int(p.cqOff.cqes) + int(p.cqEntries)*int(unsafe.Sizeof(cqe{}))
	single := p.features&ioringFeatSingleMmap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	if r.sq, err = syscall.Mmap(r.fd, ioringOffSQRing, sqSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE); err != nil {
		r.close()
		return nil, syscall.ENOMEM
	}
	r.cq = r.sq
	if !single {
		if r.cq, err = syscall.Mmap(r.fd, ioringOffCQRing, cqSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE); err != nil {
			r.close()
			return nil, syscall.ENOMEM
		}
	}
	if r.sqes, err = syscall.Mmap(r.fd, ioringOffSQEs, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE); err != nil {
		r.close()
		return nil, syscall.ENOMEM
	}
	r.sqHead = (*uint32)(unsafe.Pointer(&r.sq[p.sqOff.head]))
	r.sqTail = (*uint32)(unsafe.Pointer(&r.sq[p.sqOff.tail]))
	r.sqMask = *(*uint32)(unsafe.Pointer(&r.sq[p.sqOff.ringMask]))
	r.sqArray = unsafe.Slice((*uint32)(unsafe.Pointer(&r.sq[p.sqOff.array])), p.sqEntries)
	r.cqHead = (*uint32)(unsafe.Pointer(&r.cq[p.cqOff.head]))
	r.cqTail = (*uint32)(unsafe.Pointer(&r.cq[p.cqOff.tail]))
	r.cqMask = *(*uint32)(unsafe.Pointer(&r.cq[p.cqOff.ringMask]))
	r.cqes = unsafe.Slice((*cqe)(unsafe.Pointer(&r.cq[p.cqOff.cqes])), p.cqEntries)
	r.sqeSlice = unsafe.Slice((*sqe)(unsafe.Pointer(&r.sqes[0])), p.sqEntries)
	return r, 0
}

// sendAll submits sends (at most ringEntries) and waits for their
// completions, which a send with MSG_DONTWAIT posts at once, as sendto
// would return; false if it could not submit them.
func (r *ring) sendAll(sends []Send) bool {
	tail := atomic.LoadUint32(r.sqTail)
	for i := range sends {
		s := &sends[i]
		idx := (tail + uint32(i)) & r.sqMask
		e := &r.sqeSlice[idx]
		*e = sqe{opcode: ioringOpSend, fd: int32(s.Fd), len: uint32(len(s.B)), msgFlags: uint32(s.flags() | syscall.MSG_DONTWAIT), userData: uint64(i)}
		if len(s.B) > 0 {
			e.addr = uint64(uintptr(unsafe.Pointer(&s.B[0])))
		}
		r.sqArray[idx] = idx
	}
	atomic.StoreUint32(r.sqTail, tail+uint32(len(sends)))
	n := uintptr(len(sends))
	submit := n
	for {
		_, _, errno := syscall.RawSyscall6(sysIOUringEnter, uintptr(r.fd), submit, n, ioringEnterGetEvents, 0, 0)
		if errno == syscall.EINTR {
			submit = 0 // submitted; wait for the completions
			continue
		}
		if errno != 0 {
			return false
		}
		break
	}
	head := atomic.LoadUint32(r.cqHead)
	ctail := atomic.LoadUint32(r.cqTail)
	for ; head != ctail; head++ {
		c := &r.cqes[head&r.cqMask]
		s := &sends[c.userData]
		if c.res < 0 {
			s.N, s.Errno = 0, syscall.Errno(-c.res)
		} else {
			s.N, s.Errno = int(c.res), 0
		}
	}
	atomic.StoreUint32(r.cqHead, head)
	return true
}

// close unmaps what of the ring is mapped and closes its descriptor: the
// whole of it, or what newRing had mapped when a mapping failed.
func (r *ring) close() {
	if r.sqes != nil {
		syscall.Munmap(r.sqes)
	}
	if r.cq != nil && &r.cq[0] != &r.sq[0] {
		syscall.Munmap(r.cq)
	}
	if r.sq != nil {
		syscall.Munmap(r.sq)
	}
	syscall.Close(r.fd)
}
