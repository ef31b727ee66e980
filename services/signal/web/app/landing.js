// The landing page: pick a meeting (a fresh random id is suggested) and a name.

const room = document.getElementById('room');
const name = document.getElementById('name');
room.value = `meet-${Math.random().toString(36).slice(2, 8)}`;
name.value = localStorage.getItem('signal-name') || '';

document.getElementById('pick').addEventListener('submit', (e) => {
  e.preventDefault();
  localStorage.setItem('signal-name', name.value.trim());
  const query = new URLSearchParams({ name: name.value.trim(), autojoin: '1' });
  location.href = `/meeting/${encodeURIComponent(room.value.trim())}?${query}`;
});
