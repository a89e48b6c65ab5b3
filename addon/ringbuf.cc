// SPDX-License-Identifier: Apache-2.0
// BPF ring buffers read on a thread of their own, and 64-bit words of
// mmapable array maps changed atomically (what `bpfproxy monitor` needs:
// src/dataplane/bpf/monitor.ts).
//
// ringbufOpen(size, callback) -> RingbufReader
//   Creates a BPF_MAP_TYPE_RINGBUF of `size` bytes that the reader owns
//   (its fd: the reader's `fd`, e.g. to put in a map-in-map slot) and reads
//   it on a thread (libbpf ring_buffer, woken through its epoll fd). What the
//   thread reads reaches JavaScript through a thread-safe function, one call
//   per batch:
//     callback({ records: Buffer, count })  // count records, each a u32 length
//                                           // (host order), 4 bytes of zero, the
//                                           // record, zero padded to 8 bytes
//     callback({ errno })                    // reading failed; no more batches
//   At most kMaxInFlight batches wait for JavaScript: when it falls behind,
//   the thread stops reading and the ring fills; the BPF side never waits
//   (bpf_ringbuf_output fails and the program counts the loss). close()
//   stops the thread and closes the ring (safe to call twice); batches not
//   yet delivered are dropped. The reader does not keep the event loop alive.
//
// mapWordOp(map, offset, op, value?, expected?) -> bigint
//   One 64-bit word at `offset` (a multiple of 8) of an array map created
//   with BPF_F_MMAPABLE, through a shared mapping: 'load', 'store' (returns
//   the value before), 'add' (returns the value before; value may be
//   negative), 'cas' (store value if the word is `expected`; returns the
//   word before either way). Sequentially consistent, as seen by BPF
//   programs reading the same word.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <time.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common.h"

namespace bpfproxy {

namespace {

constexpr size_t kMaxInFlight = 4;
// A batch is handed over once it holds this much, even mid-pass...
constexpr size_t kBatchBytes = 1 << 20;
// ...or once its first record waited this long (ms): a few records a call
// would cost JavaScript more per record than the records themselves.
constexpr int kBatchWaitMs = 2;

struct Batch {
  std::vector<uint8_t> bytes;
  uint32_t count = 0;
  int err = 0;
  struct timespec first = {};  // when its first record was read
};

int64_t MsSince(const struct timespec& t) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (now.tv_sec - t.tv_sec) * 1000 + (now.tv_nsec - t.tv_nsec) / 1000000;
}

// What the reader thread and the JS-thread callbacks share; it outlives the
// reader object when callbacks are still queued.
struct Shared {
  std::mutex mu;
  std::condition_variable cv;
  size_t in_flight = 0;
  bool stopping = false;  // the thread must not wait for JS any more
  bool closed = false;    // JS closed the reader: deliver nothing more
};

struct Delivery {
  std::shared_ptr<Shared> shared;
  Batch* batch;
};

struct RingbufCloser {
  void operator()(struct ring_buffer* rb) const { ring_buffer__free(rb); }
};

}  // namespace

class RingbufReader : public Napi::ObjectWrap<RingbufReader> {
 public:
  // The constructor is per environment (AddonData): a worker thread that
  // loads the addon has its own, gone when the worker is.
  static Napi::Function Define(Napi::Env env) {
    Napi::Function f = DefineClass(env, "RingbufReader",
                                   {
                                       InstanceAccessor<&RingbufReader::GetFd>("fd"),
                                       InstanceAccessor<&RingbufReader::GetSize>("size"),
                                       InstanceAccessor<&RingbufReader::Closed>("closed"),
                                       InstanceMethod("close", &RingbufReader::Close),
                                   });
    Data(env)->ringbuf_reader = Napi::Persistent(f);
    return f;
  }

  explicit RingbufReader(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RingbufReader>(info) {
    Napi::Env env = info.Env();
    int64_t size;
    if (!ArgInt(info, 0, "size", &size)) return;
    if (info.Length() < 2 || !info[1].IsFunction()) {
      ThrowTypeError(env, "ringbufOpen(size, callback): callback must be a function");
      return;
    }
    const long page = sysconf(_SC_PAGESIZE);
    if (size < page || size > (1LL << 30) || (size & (size - 1)) != 0) {
      Throw(env, "create ring buffer", EINVAL, "",
            "size " + std::to_string(size) + " must be a power of 2 from the page size (" + std::to_string(page) +
                ") to 1 GiB");
      return;
    }
    Fd map(bpf_map_create(BPF_MAP_TYPE_RINGBUF, "bpfproxy_ring", 0, 0, static_cast<__u32>(size), nullptr));
    if (map.get() < 0) {
      Throw(env, "create ring buffer of " + std::to_string(size) + " bytes", errno);
      return;
    }
    shared_ = std::make_shared<Shared>();
    struct ring_buffer* rb = ring_buffer__new(map.get(), &RingbufReader::OnSample, this, nullptr);
    if (!rb) {
      Throw(env, "map ring buffer " + std::to_string(map.get()), errno);
      return;
    }
    rb_.reset(rb);
    Fd stop(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (stop.get() < 0) {
      Throw(env, "create eventfd for the ring buffer reader", errno);
      return;
    }
    tsfn_ = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "bpfproxy-ringbuf", 0, 1);
    tsfn_.Unref(env);
    size_ = static_cast<uint32_t>(size);
    map_ = std::move(map);
    stop_ = std::move(stop);
    batch_ = new Batch();
    thread_ = std::thread(&RingbufReader::Run, this);
    running_ = true;
  }

  ~RingbufReader() override { Stop(); }

 private:
  Napi::Value GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), map_.get()); }
  Napi::Value GetSize(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), size_); }
  Napi::Value Closed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !running_); }
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Stop();
    return info.Env().Undefined();
  }

  void Stop() {
    if (!running_) return;
    running_ = false;
    {
      std::lock_guard<std::mutex> lk(shared_->mu);
      shared_->stopping = true;
      shared_->closed = true;
    }
    shared_->cv.notify_all();
    uint64_t one = 1;
    ssize_t w = write(stop_.get(), &one, sizeof(one));
    (void)w;
    if (thread_.joinable()) thread_.join();
    delete batch_;
    batch_ = nullptr;
    rb_.reset();
    map_.reset();
    stop_.reset();
  }

  // Runs on the reader thread, inside ring_buffer__consume: one record.
  static int OnSample(void* ctx, void* data, size_t len) {
    auto* self = static_cast<RingbufReader*>(ctx);
    Batch* b = self->batch_;
    if (b->count == 0) clock_gettime(CLOCK_MONOTONIC, &b->first);
    const size_t at = b->bytes.size();
    const size_t padded = (len + 7) & ~static_cast<size_t>(7);
    b->bytes.resize(at + 8 + padded);
    uint32_t hdr[2] = {static_cast<uint32_t>(len), 0};
    memcpy(b->bytes.data() + at, hdr, sizeof(hdr));
    memcpy(b->bytes.data() + at + 8, data, len);
    b->count++;
    if (b->bytes.size() >= kBatchBytes && !self->Deliver()) return -ECANCELED;
    return 0;
  }

  // Hand the current batch to JS (waiting while kMaxInFlight are pending);
  // false once the reader is stopping.
  bool Deliver() {
    Batch* b = batch_;
    if (b->count == 0 && b->err == 0) return true;
    {
      std::unique_lock<std::mutex> lk(shared_->mu);
      shared_->cv.wait(lk, [this] { return shared_->in_flight < kMaxInFlight || shared_->stopping; });
      if (shared_->stopping) return false;
      shared_->in_flight++;
    }
    batch_ = new Batch();
    auto* d = new Delivery{shared_, b};
    napi_status st = tsfn_.NonBlockingCall(d, [](Napi::Env env, Napi::Function cb, Delivery* d) {
      std::unique_ptr<Delivery> own(d);
      std::unique_ptr<Batch> batch(d->batch);
      bool closed;
      {
        std::lock_guard<std::mutex> lk(d->shared->mu);
        d->shared->in_flight--;
        closed = d->shared->closed;
      }
      d->shared->cv.notify_all();
      if (env == nullptr || cb.IsEmpty() || closed) return;
      Napi::Object o = Napi::Object::New(env);
      if (batch->err) {
        o.Set("errno", batch->err);
      } else {
        o.Set("records", Napi::Buffer<uint8_t>::Copy(env, batch->bytes.data(), batch->bytes.size()));
        o.Set("count", batch->count);
      }
      cb.Call({o});
    });
    if (st != napi_ok) {
      delete b;
      delete d;
      std::lock_guard<std::mutex> lk(shared_->mu);
      shared_->in_flight--;
      return false;
    }
    return true;
  }

  // The reader thread: wait for data or the stop signal, read all there is,
  // hand it over once the batch is big enough or its first record waited
  // kBatchWaitMs.
  static void Run(RingbufReader* self) {
    const int rfd = ring_buffer__epoll_fd(self->rb_.get());
    for (;;) {
      struct pollfd p[2] = {{rfd, POLLIN, 0}, {self->stop_.get(), POLLIN, 0}};
      int timeout = -1;
      if (self->batch_->count)
        timeout = static_cast<int>(std::max<int64_t>(0, kBatchWaitMs - MsSince(self->batch_->first)));
      int r = poll(p, 2, timeout);
      if (r < 0) {
        if (errno == EINTR) continue;
        self->batch_->err = errno;
        self->Deliver();
        break;
      }
      if (p[1].revents) break;
      int n = ring_buffer__consume(self->rb_.get());
      if (n == -ECANCELED) break;  // stopping while a full batch waited
      if (n < 0) {
        self->Deliver();
        self->batch_->err = -n;
        self->Deliver();
        break;
      }
      if (self->batch_->count && MsSince(self->batch_->first) < kBatchWaitMs) continue;
      if (!self->Deliver()) break;
    }
    self->tsfn_.Release();
  }

  std::shared_ptr<Shared> shared_;
  std::unique_ptr<struct ring_buffer, RingbufCloser> rb_;
  Fd map_;
  Fd stop_;
  Batch* batch_ = nullptr;  // the reader thread's, until it is handed over
  uint32_t size_ = 0;
  std::thread thread_;
  Napi::ThreadSafeFunction tsfn_;
  bool running_ = false;
};

static Napi::Value RingbufOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[1].IsFunction()) {
    ThrowTypeError(env, "ringbufOpen(size, callback): callback must be a function");
    return env.Undefined();
  }
  return Data(env)->ringbuf_reader.New({info[0], info[1]});
}

// A shared mapping of an mmapable array map, unmapped when it goes.
class WordMap {
 public:
  WordMap(int fd, size_t len) : len_(len) {
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    base_ = p == MAP_FAILED ? nullptr : p;
  }
  ~WordMap() {
    if (base_) munmap(base_, len_);
  }
  uint64_t* word(size_t offset) const { return reinterpret_cast<uint64_t*>(static_cast<uint8_t*>(base_) + offset); }
  bool ok() const { return base_ != nullptr; }

 private:
  void* base_ = nullptr;
  size_t len_;
};

static bool ArgBigU64(const Napi::CallbackInfo& info, size_t i, const char* what, uint64_t* out) {
  if (info.Length() <= i || !info[i].IsBigInt()) {
    ThrowTypeError(info.Env(), std::string("mapWordOp: ") + what + " must be a bigint");
    return false;
  }
  bool lossless;  // a negative value wraps (two's complement): what 'add' wants
  *out = info[i].As<Napi::BigInt>().Uint64Value(&lossless);
  return true;
}

// mapWordOp(map, offset, op, value?, expected?) -> bigint
static Napi::Value MapWordOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd, offset;
  std::string op;
  if (!ArgFd(info, 0, "map", &fd) || !ArgInt(info, 1, "offset", &offset) || !ArgString(info, 2, "op", &op))
    return env.Undefined();
  if (op != "load" && op != "store" && op != "add" && op != "cas") {
    ThrowTypeError(env, "mapWordOp: op must be 'load', 'store', 'add' or 'cas', got '" + op + "'");
    return env.Undefined();
  }
  struct bpf_map_info mi = {};
  __u32 len = sizeof(mi);
  const std::string what = "map word " + op + " fd " + std::to_string(fd);
  if (fd < 0 || bpf_obj_get_info_by_fd(static_cast<int>(fd), &mi, &len))
    return Throw(env, what, fd < 0 ? EBADF : errno);
  const std::string named = "map word " + op + " " + mi.name;
  if (mi.type != BPF_MAP_TYPE_ARRAY || !(mi.map_flags & BPF_F_MMAPABLE))
    return Throw(env, named, EINVAL, "", "not an array map created with BPF_F_MMAPABLE");
  const uint64_t elem = (static_cast<uint64_t>(mi.value_size) + 7) & ~7ULL;
  const uint64_t data = elem * mi.max_entries;
  if (offset < 0 || offset % 8 != 0 || static_cast<uint64_t>(offset) + 8 > data)
    return Throw(env, named, EINVAL, "",
                 "offset " + std::to_string(offset) + " is not a multiple of 8 inside the map's " +
                     std::to_string(data) + " bytes");
  uint64_t value = 0, expected = 0;
  if (op != "load" && !ArgBigU64(info, 3, "value", &value)) return env.Undefined();
  if (op == "cas" && !ArgBigU64(info, 4, "expected", &expected)) return env.Undefined();
  const long page = sysconf(_SC_PAGESIZE);
  WordMap m(static_cast<int>(fd), ((data + page - 1) / page) * page);
  if (!m.ok()) return Throw(env, named, errno);
  uint64_t* w = m.word(static_cast<size_t>(offset));
  uint64_t before;
  if (op == "load") {
    before = __atomic_load_n(w, __ATOMIC_SEQ_CST);
  } else if (op == "store") {
    before = __atomic_exchange_n(w, value, __ATOMIC_SEQ_CST);
  } else if (op == "add") {
    before = __atomic_fetch_add(w, value, __ATOMIC_SEQ_CST);
  } else {
    before = expected;
    __atomic_compare_exchange_n(w, &before, value, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  }
  return Napi::BigInt::New(env, before);
}

void InitRingbuf(Napi::Env env, Napi::Object exports) {
  RingbufReader::Define(env);
  exports.Set("ringbufOpen", Napi::Function::New(env, RingbufOpen));
  exports.Set("mapWordOp", Napi::Function::New(env, MapWordOp));
}

}  // namespace bpfproxy
