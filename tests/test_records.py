"""Id bookkeeping shared by every reader and the trainer."""

from input_pipeline.records import Record, ReIDDataset, disjoint_ids, relabel


def _rec(pid, ds="a"):
  return Record(path=f"/{ds}/{pid}.jpg", pid=pid, camid=0, split="train", dataset=ds)


def test_relabel_uses_the_sorted_id_order():
  got = relabel([_rec(42), _rec(7), _rec(42), _rec(100)])
  assert [r.pid for r in got] == [1, 0, 1, 2]


def test_disjoint_ids_shift_each_source_past_the_previous_ones():
  a = ReIDDataset("a", "/a", train=[_rec(5), _rec(9), _rec(5)])
  b = ReIDDataset("b", "/b", train=[_rec(5, "b"), _rec(3, "b")])
  (ra, wa), (rb, wb) = disjoint_ids([(a, 1.0), (b, 0.5)])[0]
  assert [r.pid for r in ra] == [0, 1, 0] and [r.pid for r in rb] == [3, 2]
  assert (wa, wb) == (1.0, 0.5)
  assert disjoint_ids([(a, 1.0), (b, 0.5)])[1] == 4
