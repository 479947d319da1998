use std::io::Result as IoResult;
use std::io::{Read, Write};

use std::sync::{Arc, Condvar, Mutex};

use std::mem;

// porchlight: each hand-over below happens exactly once, so a one-shot slot (an `Arc` of a
// mutex and a condvar, ~100 bytes) replaces the `std::sync::mpsc` channel upstream used (a
// cache-padded channel of ~500 bytes plus a 31-slot block of the handed-over value, ~2 KiB for
// a `BufReader`), which every connection paid three times over for as long as it was open.
// `Request`'s "responded" notice uses it too (`util::one_shot`), so no `mpsc` is left.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State::Empty),
        ready: Condvar::new(),
    });
    (
        Sender {
            slot: Some(Arc::clone(&slot)),
        },
        Receiver { slot },
    )
}

struct Slot<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

enum State<T> {
    Empty,
    Sent(T),
    /// Taken by the receiver, or the sender went away without sending.
    Closed,
}

/// Sends one value; dropping it unsent wakes the receiver with an error.
pub(crate) struct Sender<T> {
    slot: Option<Arc<Slot<T>>>,
}

pub(crate) struct Receiver<T> {
    slot: Arc<Slot<T>>,
}

/// The sender went away without sending.
#[derive(Debug)]
pub(crate) struct RecvError;

impl<T> Sender<T> {
    pub(crate) fn send(&mut self, value: T) -> Result<(), T> {
        let Some(slot) = self.slot.take() else {
            return Err(value);
        };
        let mut state = slot.state.lock().unwrap_or_else(|e| e.into_inner());
        *state = State::Sent(value);
        slot.ready.notify_one();
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut state = slot.state.lock().unwrap_or_else(|e| e.into_inner());
            if let State::Empty = *state {
                *state = State::Closed;
            }
            slot.ready.notify_one();
        }
    }
}

impl<T> Receiver<T> {
    pub(crate) fn recv(&self) -> Result<T, RecvError> {
        let mut state = self.slot.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match mem::replace(&mut *state, State::Closed) {
                State::Sent(value) => return Ok(value),
                State::Closed => return Err(RecvError),
                State::Empty => {
                    *state = State::Empty;
                    state = self.slot.ready.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }
}

pub struct SequentialReaderBuilder<R>
where
    R: Read + Send,
{
    inner: SequentialReaderBuilderInner<R>,
}

enum SequentialReaderBuilderInner<R>
where
    R: Read + Send,
{
    First(R),
    NotFirst(Receiver<R>),
}

pub struct SequentialReader<R>
where
    R: Read + Send,
{
    inner: SequentialReaderInner<R>,
    next: Sender<R>,
}

enum SequentialReaderInner<R>
where
    R: Read + Send,
{
    MyTurn(R),
    Waiting(Receiver<R>),
    Empty,
}

pub struct SequentialWriterBuilder<W>
where
    W: Write + Send,
{
    writer: Arc<Mutex<W>>,
    next_trigger: Option<Receiver<()>>,
}

pub struct SequentialWriter<W>
where
    W: Write + Send,
{
    trigger: Option<Receiver<()>>,
    writer: Arc<Mutex<W>>,
    on_finish: Sender<()>,
}

impl<R: Read + Send> SequentialReaderBuilder<R> {
    pub fn new(reader: R) -> SequentialReaderBuilder<R> {
        SequentialReaderBuilder {
            inner: SequentialReaderBuilderInner::First(reader),
        }
    }
}

impl<W: Write + Send> SequentialWriterBuilder<W> {
    pub fn new(writer: W) -> SequentialWriterBuilder<W> {
        SequentialWriterBuilder {
            writer: Arc::new(Mutex::new(writer)),
            next_trigger: None,
        }
    }
}

impl<R: Read + Send> Iterator for SequentialReaderBuilder<R> {
    type Item = SequentialReader<R>;

    fn next(&mut self) -> Option<SequentialReader<R>> {
        let (tx, rx) = channel();

        let inner = mem::replace(&mut self.inner, SequentialReaderBuilderInner::NotFirst(rx));

        match inner {
            SequentialReaderBuilderInner::First(reader) => Some(SequentialReader {
                inner: SequentialReaderInner::MyTurn(reader),
                next: tx,
            }),

            SequentialReaderBuilderInner::NotFirst(previous) => Some(SequentialReader {
                inner: SequentialReaderInner::Waiting(previous),
                next: tx,
            }),
        }
    }
}

impl<W: Write + Send> Iterator for SequentialWriterBuilder<W> {
    type Item = SequentialWriter<W>;
    fn next(&mut self) -> Option<SequentialWriter<W>> {
        let (tx, rx) = channel();
        let mut next_next_trigger = Some(rx);
        ::std::mem::swap(&mut next_next_trigger, &mut self.next_trigger);

        Some(SequentialWriter {
            trigger: next_next_trigger,
            writer: self.writer.clone(),
            on_finish: tx,
        })
    }
}

impl<R: Read + Send> Read for SequentialReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        let mut reader = match self.inner {
            SequentialReaderInner::MyTurn(ref mut reader) => return reader.read(buf),
            SequentialReaderInner::Waiting(ref mut recv) => recv.recv().unwrap(),
            SequentialReaderInner::Empty => unreachable!(),
        };

        let result = reader.read(buf);
        self.inner = SequentialReaderInner::MyTurn(reader);
        result
    }
}

impl<W: Write + Send> Write for SequentialWriter<W> {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        if let Some(v) = self.trigger.as_mut() {
            v.recv().unwrap()
        }
        self.trigger = None;

        self.writer.lock().unwrap().write(buf)
    }

    fn flush(&mut self) -> IoResult<()> {
        if let Some(v) = self.trigger.as_mut() {
            v.recv().unwrap()
        }
        self.trigger = None;

        self.writer.lock().unwrap().flush()
    }
}

impl<R> Drop for SequentialReader<R>
where
    R: Read + Send,
{
    fn drop(&mut self) {
        let inner = mem::replace(&mut self.inner, SequentialReaderInner::Empty);

        match inner {
            SequentialReaderInner::MyTurn(reader) => {
                self.next.send(reader).ok();
            }
            SequentialReaderInner::Waiting(recv) => {
                let reader = recv.recv().unwrap();
                self.next.send(reader).ok();
            }
            SequentialReaderInner::Empty => (),
        }
    }
}

impl<W> Drop for SequentialWriter<W>
where
    W: Write + Send,
{
    fn drop(&mut self) {
        self.on_finish.send(()).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn readers_take_turns_in_order() {
        let mut builder = SequentialReaderBuilder::new(Cursor::new(b"abcdef".to_vec()));
        let mut first = builder.next().unwrap();
        let mut second = builder.next().unwrap();
        let later = std::thread::spawn(move || {
            // Blocks until the first reader is dropped, then reads on from where it stopped.
            let mut rest = String::new();
            second.read_to_string(&mut rest).unwrap();
            rest
        });
        let mut two = [0u8; 2];
        first.read_exact(&mut two).unwrap();
        assert_eq!(&two, b"ab");
        drop(first);
        assert_eq!(later.join().unwrap(), "cdef");
    }

    #[test]
    fn writers_take_turns_in_order() {
        let mut builder = SequentialWriterBuilder::new(Vec::new());
        let shared = Arc::clone(&builder.writer);
        let mut first = builder.next().unwrap();
        let mut second = builder.next().unwrap();
        let later = std::thread::spawn(move || second.write_all(b" world").unwrap());
        first.write_all(b"hello").unwrap();
        drop(first);
        later.join().unwrap();
        assert_eq!(&*shared.lock().unwrap(), b"hello world");
    }

    #[test]
    fn a_sender_dropped_unsent_wakes_the_receiver_with_an_error() {
        let (sender, receiver) = channel::<u8>();
        let waiting = std::thread::spawn(move || receiver.recv().is_err());
        drop(sender);
        assert!(waiting.join().unwrap());
        let (mut sender, receiver) = channel();
        assert!(sender.send(7).is_ok());
        assert_eq!(receiver.recv().unwrap(), 7);
        assert!(sender.send(8).is_err(), "one value only");
    }
}
