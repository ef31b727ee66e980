// The video tiles of a call page: one <figure> per peer in #grid, made on first use.

export function videoTile(peer) {
  let fig = document.querySelector(`figure[data-peer="${CSS.escape(peer)}"]`);
  if (!fig) {
    fig = document.createElement('figure');
    fig.className = 'tile';
    fig.dataset.peer = peer;
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    fig.append(video, document.createElement('figcaption'));
    document.getElementById('grid').append(fig);
  }
  return fig;
}
