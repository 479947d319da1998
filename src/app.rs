//! Wires the sources, hubs and the HTTP server together, and owns shutdown.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::camera::Camera;
use crate::clips::{self, ClipSettings, FrameRing, Recorder};
use crate::config::Config;
use crate::control::Control;
use crate::events::{EventHub, Retention, Store, StoreError, StoreReader};
use crate::http::server::{self, Registry};
use crate::metrics::Metrics;
use crate::outbound::{Outbound, OutboundSettings};
use crate::sdnotify::{Notifier, Watchdog};
use crate::shutdown::{self, Shutdown};
use crate::status::{StatusHub, StatusSampler};
use crate::video::Video;

/// What every connection thread can reach: configuration, the hubs, and the Control handle.
pub struct Ctx {
    pub config: Config,
    pub events: EventHub,
    pub status: StatusHub,
    pub control: Control,
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
    /// The capture thread's handle: live frames, state, snapshots.
    pub camera: Camera,
    /// The shared per-preset encoders.
    pub video: Video,
    /// The clip recorder, when clips are recorded.
    pub clips: Option<Recorder>,
    /// The MQTT bridge and webhooks, for status and metrics.
    pub outbound: Outbound,
}

/// How long shutdown waits for connection threads to finish after closing their sockets.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long shutdown waits for the MQTT bridge (its `offline` and DISCONNECT) and the webhook
/// senders before the event writer saves their cursors and stops.
const DELIVERY_STOP_TIMEOUT: Duration = Duration::from_millis(2000);

/// Runs the server until SIGTERM/SIGINT. An `Err` is a fatal error (exit status 1).
pub fn run(config: Config) -> Result<(), String> {
    // Before any thread exists, so that every thread inherits the mask.
    shutdown::block_signals();
    let shutdown = Shutdown::new();
    shutdown::spawn_signal_listener(shutdown.clone())
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;

    let metrics = Arc::new(Metrics::new());
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
    let clip_settings = ClipSettings {
        pre: Duration::from_secs_f64(config.clip_pre_s),
        post: Duration::from_secs_f64(config.clip_post_s),
        event_types: config.clip_event_types.clone(),
        max_bytes: config.max_clip_bytes,
        dir: data_dir.join(clips::file::DIR),
    };
    // Clips need a writable store and their folder (made by the store as it opened).
    let record_clips = clip_settings.enabled() && store.is_ok() && clip_settings.dir.is_dir();
    let pre_roll = record_clips.then(|| {
        Arc::new(FrameRing::new(
            clips::ring::keep_for(clip_settings.pre),
            clips::ring::DEFAULT_MAX_BYTES,
        ))
    });
    let (events, writer) = EventHub::start(store, reader, Arc::clone(&metrics))
        .map_err(|e| format!("cannot start the event writer: {e}"))?;
    let (camera, capture) = Camera::start(
        config.camera.clone(),
        pre_roll.clone(),
        events.clone(),
        Arc::clone(&metrics),
        shutdown.clone(),
    )
    .map_err(|e| format!("cannot start the camera thread: {e}"))?;
    let (clips, clip_writer) = match pre_roll {
        Some(ring) => Recorder::start(
            clip_settings,
            ring,
            camera.clone(),
            events.clone(),
            shutdown.clone(),
        )
        .map(|(recorder, handle)| (Some(recorder), Some(handle)))
        .map_err(|e| format!("cannot start the clip writer: {e}"))?,
        None => {
            if clip_settings.enabled() {
                log::warn!("clips are not recorded: the data dir cannot be written");
            } else {
                log::info!("clips are off (clip_event_types is empty or max_clip_bytes is 0)");
            }
            (None, None)
        }
    };
    let video = Video::new(camera.frames().clone(), shutdown.clone());
    let control = Control::new(events.clone()).with_camera(camera.clone());
    let outbound_settings = OutboundSettings::from_config(&config);
    let outbound = Outbound::prepare(&outbound_settings, &events);
    let motion = crate::motion::start_configured(
        &config,
        crate::motion::Wiring {
            camera: camera.frames().clone(),
            video: video.clone(),
            events: events.clone(),
            shutdown: shutdown.clone(),
        },
    )
    .map_err(|e| format!("cannot start the motion thread: {e}"))?;

    let status_camera = camera.clone();
    let section = |pick: fn((serde_json::Value, serde_json::Value)) -> serde_json::Value| {
        let outbound = outbound.clone();
        let metrics = Arc::clone(&metrics);
        let last_id = move || {
            metrics
                .last_event_id
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        Box::new(move || pick(outbound.status_json(last_id()))) as crate::status::SectionFn
    };
    let sampler = StatusSampler::new(
        Arc::clone(&metrics),
        Box::new(move || status_camera.status_json()),
        &config.doorbell,
    )
    .with_section("mqtt", section(|(mqtt, _)| mqtt))
    .with_section("webhooks", section(|(_, hooks)| hooks));
    let status = StatusHub::new(sampler);
    let sampler = status
        .spawn_sampler(
            Duration::from_secs_f64(config.status_interval_s),
            shutdown.clone(),
        )
        .map_err(|e| format!("cannot start the status thread: {e}"))?;

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
    // After the bind, so a taken port fails before any pin is exported; before "listening", so a
    // GPIO error is fatal at startup and READY=1 means the button is read.
    let doorbell = crate::doorbell::start(
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

    let ctx = Arc::new(Ctx {
        config,
        events: events.clone(),
        status,
        control,
        metrics,
        shutdown: shutdown.clone(),
        camera,
        video,
        clips,
        outbound: outbound.clone(),
    });
    let registry = Arc::new(Registry::default());
    let accept = {
        let ctx = Arc::clone(&ctx);
        let registry = Arc::clone(&registry);
        std::thread::Builder::new()
            .name("accept".into())
            .stack_size(128 * 1024)
            .spawn(move || server::accept_loop(accept_listener, ctx, registry))
            .map_err(|e| format!("cannot start the accept thread: {e}"))?
    };
    // Never waits for a broker or receiver: each thread connects (and retries) by itself.
    let delivery = outbound.start(&outbound_settings, &ctx)?;
    log::info!(
        "listening on http://{local} (camera {}, doorbell {}, {})",
        ctx.config.camera,
        ctx.config.doorbell,
        if ctx.config.tokens.is_empty() {
            "no tokens: every client is admin".to_string()
        } else {
            format!("{} token(s)", ctx.config.tokens.roles().count())
        }
    );

    // Until a signal (the signal thread fires the broadcast), wake every tick to tell systemd
    // we are alive, but only while every thread the server cannot work without is.
    let notifier = Notifier::from_env();
    notifier.ready(&format!("listening on http://{local}"));
    let mut watchdog = Watchdog::new(&notifier);
    let stop = shutdown.signal();
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(notifier.tick())
    {
        let mut vital = vec![
            ("event writer", &writer),
            ("accept loop", &accept),
            ("status sampler", &sampler),
        ];
        vital.extend(doorbell.as_ref().map(|handle| ("doorbell", handle)));
        vital.extend(
            delivery
                .iter()
                .map(|(name, handle)| (name.as_str(), handle)),
        );
        vital.extend(motion.as_ref().map(|handle| ("motion detector", handle)));
        let stopped = vital.iter().find(|(_, h)| h.is_finished()).map(|(n, _)| *n);
        watchdog.tick(stopped);
    }
    notifier.stopping();
    let stopping = Instant::now();
    // The doorbell first: a press being stored finishes before the writer stops.
    if let Some(doorbell) = doorbell
        && doorbell.join().is_err()
    {
        log::error!("the doorbell thread panicked");
    }
    server::unblock_accept(&listener);
    registry.close_all();
    while !registry.is_empty() && stopping.elapsed() < DRAIN_TIMEOUT {
        std::thread::sleep(Duration::from_millis(5));
    }
    if !registry.is_empty() {
        log::warn!("{} connection(s) still closing at exit", registry.len());
    }
    // The camera publishes events (camera_offline/online): stop it before the event writer.
    if capture.join().is_err() {
        log::error!("the camera thread panicked");
    }
    // A motion in progress ends with its motion_ended event: before the event writer stops.
    if let Some(motion) = motion
        && motion.join().is_err()
    {
        log::error!("the motion thread panicked");
    }
    // The clip writer reports its last recording through the event writer: stop it first.
    if let Some(clip_writer) = clip_writer
        && clip_writer.join().is_err()
    {
        log::error!("the clip writer panicked");
    }
    stop_delivery(delivery, stopping + DRAIN_TIMEOUT + DELIVERY_STOP_TIMEOUT);
    events.stop();
    if writer.join().is_err() {
        return Err("the event writer panicked".into());
    }
    accept.join().ok();
    sampler.join().ok();
    log::info!("stopped cleanly in {} ms", stopping.elapsed().as_millis());
    Ok(())
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
