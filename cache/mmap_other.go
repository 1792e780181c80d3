//go:build !unix

package cache

// mapFile reads a named file whole where memory maps are not available here.
func (s *Store) mapFile(name string) (data []byte, unmap func(), mapped bool, err error) {
	data, err = s.ReadFile(name)
	if err != nil {
		return nil, nil, false, err
	}
	return data, func() {}, false, nil
}
