// Installed in every frame before the page's own scripts. For each <video> that plays with sound and a
// media clock (a file or a stream of segments, not a call's MediaStream), it sums how late Chromium
// expects to show each frame against the moment the element's clock reaches that frame's media time.
// The recorder restarts the sums as its capture starts and reads them as it stops (`__NAME__`).
// It changes nothing in the page.
(() => {
  const name = '__NAME__';
  if (Object.prototype.hasOwnProperty.call(window, name)) return;
  const FAR_MS = __FAR_MS__; // a frame's lateness beyond this is no presentation (a seek, a stall): left out
  let count = 0;
  let total = 0;
  const followed = new WeakSet();
  const audible = (video) =>
    !video.srcObject && !video.muted && video.volume > 0 && !video.paused && video.playbackRate > 0 &&
    (video.webkitAudioDecodedByteCount === undefined || video.webkitAudioDecodedByteCount > 0);
  const follow = (video) => {
    if (!(video instanceof HTMLVideoElement) || followed.has(video)) return;
    if (typeof video.requestVideoFrameCallback !== 'function') return;
    followed.add(video);
    const onFrame = (_now, frame) => {
      if (audible(video)) {
        const read = performance.now();
        const due = read + ((frame.mediaTime - video.currentTime) * 1000) / video.playbackRate;
        const late = frame.expectedDisplayTime - due;
        if (Math.abs(late) <= FAR_MS) {
          count += 1;
          total += late;
        }
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  };
  document.addEventListener('playing', (event) => follow(event.target), true);
  Object.defineProperty(window, name, {
    value: (restart) => {
      const sums = [count, total];
      if (restart) {
        count = 0;
        total = 0;
      }
      return sums;
    },
    enumerable: false,
  });
})();
