//! Wires the sources, hubs and the HTTP server together, and owns shutdown.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::camera::Camera;
use crate::clips::{self, ClipSettings, FrameRing, Recorder};
use crate::config::Config;
use crate::control::Control;
use crate::ctx::Ctx;
use crate::events::{EventHub, Retention, Store, StoreError, StoreReader};
use crate::http::server::{self, Registry};
use crate::http::settings::HttpSettings;
use crate::http::throttle::AuthThrottle;
use crate::metrics::Metrics;
use crate::outbound::{Outbound, OutboundSettings};
use crate::sdnotify::{Notifier, Watchdog};
use crate::shutdown::{self, Shutdown};
use crate::status::{StatusHub, StatusSampler};
use crate::video::Video;

/// How long shutdown lets streams end themselves (an SSE body with its last chunk, a WebSocket
/// with its close frame) before it closes every socket still open.
const STREAM_END_GRACE: Duration = Duration::from_millis(300);
/// How long shutdown waits for connection threads to finish after closing their sockets.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long shutdown waits for the MQTT bridge (its `offline` and DISCONNECT) and the webhook
/// senders before the event writer saves their cursors and stops.
const DELIVERY_STOP_TIMEOUT: Duration = Duration::from_millis(2000);

/// Everything `run` has started, stopped in reverse order by [`Running::stop`] — on a clean
/// shutdown, and by `Drop` when start-up fails part way (an early `?` return), so no thread is
/// left unjoined and the store always gets its final checkpoint (the writer does it as it
/// stops).
struct Running {
    shutdown: Shutdown,
    listener: Option<TcpListener>,
    registry: Option<Arc<Registry>>,
    writer: Option<(EventHub, JoinHandle<()>)>,
    capture: Option<JoinHandle<()>>,
    motion: Option<JoinHandle<()>>,
    clip_writer: Option<JoinHandle<()>>,
    sampler: Option<JoinHandle<()>>,
    doorbell: Option<JoinHandle<()>>,
    accept: Option<JoinHandle<()>>,
    /// The MQTT bridge and webhook senders.
    delivery: Vec<(String, JoinHandle<()>)>,
}

impl Running {
    fn new(shutdown: Shutdown) -> Running {
        Running {
            shutdown,
            listener: None,
            registry: None,
            writer: None,
            capture: None,
            motion: None,
            clip_writer: None,
            sampler: None,
            doorbell: None,
            accept: None,
            delivery: Vec::new(),
        }
    }

    /// The name of the first thread the server cannot work without that has ended, if any.
    fn first_vital_stopped(&self) -> Option<&str> {
        let vital = [
            ("event writer", self.writer.as_ref().map(|(_, h)| h)),
            ("accept loop", self.accept.as_ref()),
            ("status sampler", self.sampler.as_ref()),
            ("doorbell", self.doorbell.as_ref()),
            ("motion detector", self.motion.as_ref()),
        ];
        let delivery = self
            .delivery
            .iter()
            .map(|(name, handle)| (name.as_str(), Some(handle)));
        vital
            .into_iter()
            .chain(delivery)
            .find(|(_, handle)| handle.is_some_and(JoinHandle::is_finished))
            .map(|(name, _)| name)
    }

    /// Stops what was started, last first. `Err` if the event writer panicked (events may
    /// not have been checkpointed).
    fn stop(&mut self) -> Result<(), String> {
        let stopping = Instant::now();
        self.shutdown.trigger();
        // The doorbell first: a press being stored finishes before the writer stops.
        if let Some(doorbell) = self.doorbell.take()
            && doorbell.join().is_err()
        {
            log::error!("the doorbell thread panicked");
        }
        if let Some(listener) = &self.listener {
            server::unblock_accept(listener);
        }
        if let Some(registry) = self.registry.take() {
            wait_until_closed(&registry, STREAM_END_GRACE);
            registry.close_all();
            wait_until_closed(&registry, DRAIN_TIMEOUT);
            if !registry.is_empty() {
                log::warn!("{} connection(s) still closing at exit", registry.len());
            }
        }
        if let Some(sampler) = self.sampler.take() {
            sampler.join().ok();
        }
        // The camera publishes events (camera_offline/online): stop it before the event writer.
        if let Some(capture) = self.capture.take()
            && capture.join().is_err()
        {
            log::error!("the camera thread panicked");
        }
        // A motion in progress ends with its motion_ended event: before the event writer stops.
        if let Some(motion) = self.motion.take()
            && motion.join().is_err()
        {
            log::error!("the motion thread panicked");
        }
        // The clip writer reports its last recording through the event writer: stop it first.
        if let Some(clip_writer) = self.clip_writer.take()
            && clip_writer.join().is_err()
        {
            log::error!("the clip writer panicked");
        }
        stop_delivery(
            std::mem::take(&mut self.delivery),
            stopping + DRAIN_TIMEOUT + DELIVERY_STOP_TIMEOUT,
        );
        let mut result = Ok(());
        if let Some((events, writer)) = self.writer.take() {
            events.stop();
            if writer.join().is_err() {
                result = Err("the event writer panicked".to_string());
            }
        }
        if let Some(accept) = self.accept.take() {
            accept.join().ok();
        }
        result
    }
}

/// Waits up to `timeout` for every connection to be closed.
fn wait_until_closed(registry: &Registry, timeout: Duration) {
    let started = Instant::now();
    while !registry.is_empty() && started.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            log::error!("{err}");
        }
    }
}

/// Runs the server until SIGTERM/SIGINT. An `Err` is a fatal error (exit status 1). The phases:
/// bind the port, open the event store, start the sources (event writer, camera, clips,
/// motion, status, doorbell), serve (accept loop, MQTT and webhooks), supervise until a
/// signal, and stop what runs in reverse. The port is bound before anything else starts, so
/// a taken port (or any other start-up error) touches neither the data dir nor a device; what
/// did start is stopped again, in reverse order, by [`Running`].
pub fn run(config: Config) -> Result<(), String> {
    // Before any thread exists, so that every thread inherits the mask.
    shutdown::block_signals();
    // A panic anywhere is one log line; in a connection thread it names the request.
    crate::http::panics::install_hook();
    let shutdown = Shutdown::new();
    let mut running = Running::new(shutdown.clone());

    let bound = bind(&config, &mut running)?;
    shutdown::spawn_signal_listener(shutdown.clone())
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    let metrics = Arc::new(Metrics::new());
    let opened = open_store(&config, &metrics)?;
    let outbound = OutboundSettings::from_config(&config);
    let ctx = start_sources(&config, &outbound, opened, metrics, &mut running)?;
    serve(&outbound, bound.accept_listener, &ctx, &mut running)?;
    log::info!(
        "listening on http://{} (camera {}, doorbell {}, {})",
        bound.local,
        config.camera,
        config.doorbell,
        if config.tokens.is_empty() {
            "no tokens: every client is admin".to_string()
        } else {
            format!("{} token(s)", config.tokens.roles().count())
        }
    );
    supervise(&running, bound.local);
    let stopping = Instant::now();
    running.stop()?;
    log::info!("stopped cleanly in {} ms", stopping.elapsed().as_millis());
    Ok(())
}

/// The listening socket: one handle kept by [`Running`] (to unblock `accept` at shutdown),
/// this one for the accept loop.
struct Bound {
    accept_listener: TcpListener,
    local: SocketAddr,
}

/// Phase 1: binds the port, sized for `max_connections`.
fn bind(config: &Config, running: &mut Running) -> Result<Bound, String> {
    let listener = TcpListener::bind(config.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    server::widen_backlog(&listener, config.max_connections);
    server::raise_open_file_limit(config.max_connections);
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let accept_listener = listener
        .try_clone()
        .map_err(|e| format!("cannot use the listening socket: {e}"))?;
    running.listener = Some(listener);
    Ok(Bound {
        accept_listener,
        local,
    })
}

/// The event store as opened: writable, or the reason it is not (read-only: a degraded mode).
struct OpenedStore {
    store: Result<Store, StoreError>,
    reader: Arc<StoreReader>,
}

/// Phase 2: opens the event store (a read-only data dir is served read-only; anything else
/// is fatal) and records its last event id.
fn open_store(config: &Config, metrics: &Metrics) -> Result<OpenedStore, String> {
    let retention = Retention {
        max_events: config.max_events,
        max_snapshot_bytes: config.max_snapshot_bytes,
        max_clip_bytes: config.max_clip_bytes,
    };
    let data_dir = &config.data_dir;
    let store = match Store::open(data_dir, retention) {
        Ok(store) => Ok(store),
        // A read-only data dir is a degraded mode, not a reason to go dark: stored events and
        // live video stay available; new events are refused with 503 until it is fixed.
        Err(err @ StoreError::ReadOnly(_)) => {
            log::error!("{err}: serving stored events, refusing new ones with 503");
            Err(err)
        }
        Err(err) => {
            return Err(format!(
                "cannot open the event store in {}: {err}",
                data_dir.display()
            ));
        }
    };
    let reader = Arc::new(StoreReader::new(data_dir));
    let bounds = reader.bounds().unwrap_or_else(|err| {
        log::warn!("cannot read the event store: {err}");
        Default::default()
    });
    metrics
        .last_event_id
        .store(bounds.last_id, std::sync::atomic::Ordering::Relaxed);
    log::info!(
        "event store {} holds {} events (last id {})",
        data_dir.display(),
        bounds.stored,
        bounds.last_id
    );
    Ok(OpenedStore { store, reader })
}

/// Phase 3: starts the sources — the event writer, the camera, the clip writer, motion, the
/// status sampler and the doorbell — each handed to `running` as it starts, and returns what
/// connection threads see.
fn start_sources(
    config: &Config,
    outbound: &OutboundSettings,
    opened: OpenedStore,
    metrics: Arc<Metrics>,
    running: &mut Running,
) -> Result<Arc<Ctx>, String> {
    let shutdown = running.shutdown.clone();
    let clip_settings = clip_settings(config);
    // Clips need a writable store and their folder (made by the store as it opened).
    let record_clips =
        clip_settings.enabled() && opened.store.is_ok() && clip_settings.dir.is_dir();
    let pre_roll = record_clips.then(|| {
        Arc::new(FrameRing::new(
            clips::ring::keep_for(clip_settings.pre),
            clips::ring::DEFAULT_MAX_BYTES,
        ))
    });
    let (events, writer) = EventHub::start(opened.store, opened.reader, Arc::clone(&metrics))
        .map_err(|e| format!("cannot start the event writer: {e}"))?;
    running.writer = Some((events.clone(), writer));
    let (camera, capture) = Camera::start(
        config.camera.clone(),
        pre_roll.clone(),
        events.clone(),
        Arc::clone(&metrics),
        shutdown.clone(),
    )
    .map_err(|e| format!("cannot start the camera thread: {e}"))?;
    running.capture = Some(capture);
    let clips = start_clips(clip_settings, pre_roll, &camera, &events, running)?;
    let video = Video::new(camera.frames().clone(), shutdown.clone());
    let control = Control::new(events.clone(), camera.clone());
    let outbound = Outbound::prepare(outbound, &events);
    running.motion = crate::motion::start_configured(
        config,
        crate::motion::Wiring {
            camera: camera.frames().clone(),
            video: video.clone(),
            events: events.clone(),
            shutdown: shutdown.clone(),
        },
    )
    .map_err(|e| format!("cannot start the motion thread: {e}"))?;
    let status = start_status(config, &camera, &outbound, &metrics, running)?;
    // Before "listening", so a GPIO error is fatal at startup and READY=1 means the button is
    // read.
    running.doorbell = crate::doorbell::start(
        &config.doorbell,
        crate::doorbell::GpioSettings {
            sysfs_root: &config.gpio_sysfs_root,
            cooldown: Duration::from_millis(config.doorbell_cooldown_ms),
            chime: config.chime.as_ref(),
            chime_pulse: Duration::from_millis(config.chime_ms),
        },
        control.clone(),
        shutdown.clone(),
    )?;
    Ok(Arc::new(Ctx {
        http: HttpSettings::from_config(config),
        events,
        status,
        control,
        metrics,
        shutdown,
        camera,
        video,
        auth_throttle: AuthThrottle::default(),
        clips,
        outbound,
    }))
}

fn clip_settings(config: &Config) -> ClipSettings {
    ClipSettings {
        pre: Duration::from_secs_f64(config.clip_pre_s),
        post: Duration::from_secs_f64(config.clip_post_s),
        event_types: config.clip_event_types.clone(),
        max_bytes: config.max_clip_bytes,
        dir: config.data_dir.join(clips::file::DIR),
    }
}

/// The clip writer, when there is a pre-roll to record from.
fn start_clips(
    settings: ClipSettings,
    pre_roll: Option<Arc<FrameRing>>,
    camera: &Camera,
    events: &EventHub,
    running: &mut Running,
) -> Result<Option<Recorder>, String> {
    let Some(ring) = pre_roll else {
        if settings.enabled() {
            log::warn!("clips are not recorded: the data dir cannot be written");
        } else {
            log::info!("clips are off (clip_event_types is empty or max_clip_bytes is 0)");
        }
        return Ok(None);
    };
    let (recorder, handle) = Recorder::start(
        settings,
        ring,
        camera.clone(),
        events.clone(),
        running.shutdown.clone(),
    )
    .map_err(|e| format!("cannot start the clip writer: {e}"))?;
    running.clip_writer = Some(handle);
    Ok(Some(recorder))
}

/// The status hub and its sampler thread; the MQTT bridge and webhooks add their sections.
fn start_status(
    config: &Config,
    camera: &Camera,
    outbound: &Outbound,
    metrics: &Arc<Metrics>,
    running: &mut Running,
) -> Result<StatusHub, String> {
    let status_camera = camera.clone();
    let section = |pick: fn((serde_json::Value, serde_json::Value)) -> serde_json::Value| {
        let outbound = outbound.clone();
        let metrics = Arc::clone(metrics);
        let last_id = move || {
            metrics
                .last_event_id
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        Box::new(move || pick(outbound.status_json(last_id()))) as crate::status::SectionFn
    };
    let sampler = StatusSampler::new(
        Arc::clone(metrics),
        Box::new(move || status_camera.status_json()),
        &config.doorbell,
    )
    .with_section("mqtt", section(|(mqtt, _)| mqtt))
    .with_section("webhooks", section(|(_, hooks)| hooks));
    let status = StatusHub::new(sampler);
    running.sampler = Some(
        status
            .spawn_sampler(
                Duration::from_secs_f64(config.status_interval_s),
                running.shutdown.clone(),
            )
            .map_err(|e| format!("cannot start the status thread: {e}"))?,
    );
    Ok(status)
}

/// Phase 4: the accept loop, then the MQTT bridge and webhook senders (which never wait for
/// a broker or receiver: each thread connects, and retries, by itself).
fn serve(
    outbound: &OutboundSettings,
    listener: TcpListener,
    ctx: &Arc<Ctx>,
    running: &mut Running,
) -> Result<(), String> {
    let registry = Arc::new(Registry::default());
    running.registry = Some(Arc::clone(&registry));
    running.accept = Some({
        let ctx = Arc::clone(ctx);
        std::thread::Builder::new()
            .name("accept".into())
            .stack_size(128 * 1024)
            .spawn(move || server::accept_loop(listener, ctx, registry))
            .map_err(|e| format!("cannot start the accept thread: {e}"))?
    });
    running.delivery = start_delivery(outbound, ctx)?;
    Ok(())
}

/// Starts the MQTT bridge and one sender per webhook. Nothing here waits for a broker or a
/// receiver: an unreachable one is retried by its own thread.
fn start_delivery(
    settings: &OutboundSettings,
    ctx: &Arc<Ctx>,
) -> Result<Vec<(String, JoinHandle<()>)>, String> {
    let outbound = &ctx.outbound;
    let mut threads = Vec::new();
    if let (Some(mqtt), Some(status)) = (&settings.mqtt, &outbound.mqtt) {
        let handle = crate::mqtt::start(mqtt.clone(), Arc::clone(status), Arc::clone(ctx))
            .map_err(|e| format!("cannot start the MQTT thread: {e}"))?;
        threads.push(("mqtt".to_string(), handle));
    }
    let identity = crate::webhooks::Identity {
        public_url: settings.public_url.clone(),
        device_id: settings.device_id.clone(),
    };
    for (index, (hook, status)) in settings.webhooks.iter().zip(&outbound.webhooks).enumerate() {
        let handle = crate::webhooks::start(
            index,
            hook.clone(),
            Arc::clone(status),
            identity.clone(),
            &ctx.events,
            ctx.shutdown.clone(),
        )
        .map_err(|e| format!("cannot start webhook {index}'s thread: {e}"))?;
        threads.push((format!("webhook-{index}"), handle));
    }
    Ok(threads)
}

/// Phase 5: until a signal (the signal thread fires the broadcast), wakes every tick to tell
/// systemd we are alive, but only while every thread the server cannot work without is.
fn supervise(running: &Running, local: SocketAddr) {
    let notifier = Notifier::from_env();
    notifier.ready(&format!("listening on http://{local}"));
    let mut watchdog = Watchdog::new(&notifier);
    let stop = running.shutdown.signal();
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(notifier.tick())
    {
        watchdog.tick(running.first_vital_stopped());
    }
    notifier.stopping();
}

/// Waits until `deadline` for the delivery threads (which saw the shutdown broadcast) to end.
/// One still busy (a webhook POST waiting on its receiver) is left behind: its cursor is saved
/// as it stands by the event writer, and the event in flight is sent again after a restart.
fn stop_delivery(threads: Vec<(String, std::thread::JoinHandle<()>)>, deadline: Instant) {
    for (name, handle) in threads {
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !handle.is_finished() {
            log::warn!(
                "{name} still busy at exit; its delivery resumes from the store at the next start"
            );
        } else if handle.join().is_err() {
            log::error!("the {name} thread panicked");
        }
    }
}
